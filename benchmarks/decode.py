"""Decode benchmark: llmkit's KV-cached greedy generation versus ``GPT2LMHeadModel.generate``.

The ``gpt2-124m`` preset with random weights (ours, copied into HF), batch 1, a 16-token
prompt, 64 new tokens, greedy, float32 on CPU. Both sides must produce identical tokens
(asserted on every timed run). Reported per side:

- end-to-end tokens/s: new tokens / wall time of the whole ``generate`` call;
- time to first token (the prompt's prefill) and the steady-state time per decoded token
  (median interval between consecutive output-head calls), so prefill is separate;
- the fraction of the memory-bandwidth bound: every parameter is read once per decoded token
  (a tied embedding/head counted once: the head matmul reads the whole matrix, the embedding
  lookup one row), so the bound is copy bandwidth / weight bytes, with the copy bandwidth
  measured in the same run (``torch`` copy of a 1 GiB float32 buffer, bytes read + written).

The no-cache path (every step re-runs the whole sequence) is timed once per side for reference.

Run from the repository root::

    .venv/bin/python benchmarks/decode.py            # full run
    .venv/bin/python benchmarks/decode.py --quick    # smoke run: 8 new tokens, 1 repeat, no no-cache, no profile

See benchmarks/README.md for what each row means and the measured numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402
from train_gpt import copy_into_hf, machine_info, print_header, print_profile, print_table, profile_top_ops, torch_threads, verdict  # noqa: E402

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "decode.json"
PRESET = "gpt2-124m"
GOAL_RATIO = 1.5  # "llmkit >= 1.5x HF generate tokens/s"
GOAL_BOUND = 0.70  # "llmkit reaches >= 70 % of the memory-bandwidth bound"


# ----------------------------------------------------------------------------- memory bandwidth


def memory_bandwidth(nbytes: int, repeats: int = 5) -> dict:
    """Best-of-``repeats`` bandwidths in bytes/s: torch copy (read + write, torch's threads),
    torch sum (read only) and numpy copy (one thread)."""
    import numpy as np
    import torch

    n = nbytes // 4
    src = torch.ones(n, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)  # touch every page first

    def best(fn) -> float:
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return min(ts)

    out = {
        "buffer_bytes": n * 4,
        "torch_copy": 2 * n * 4 / best(lambda: dst.copy_(src)),
        "torch_sum_read": n * 4 / best(lambda: src.sum()),
    }
    a, b = src.numpy(), dst.numpy()
    out["numpy_copy_1thread"] = 2 * n * 4 / best(lambda: np.copyto(b, a))
    del src, dst, a, b
    return out


# ----------------------------------------------------------------------------- timing


class HeadStamps:
    """A forward hook on the output head: one timestamp per next-token logits (prefill first)."""

    def __init__(self, head):
        self.stamps: list[float] = []
        self.handle = head.register_forward_hook(lambda *_: self.stamps.append(time.perf_counter()))

    def clear(self) -> None:
        self.stamps = []

    def remove(self) -> None:
        self.handle.remove()


def run_ours(model, prompt: list[int], new: int, use_cache: bool) -> list[int]:
    from llmkit.generation import generate

    return generate(model, prompt, new, temperature=0.0, use_cache=use_cache)


def run_hf(hf, prompt: list[int], new: int, use_cache: bool) -> list[int]:
    import torch

    ids = torch.tensor([prompt], dtype=torch.long)
    out = hf.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        use_cache=use_cache,
        do_sample=False,
        min_new_tokens=new,
        max_new_tokens=new,
        pad_token_id=hf.config.eos_token_id,
    )
    return out[0, len(prompt) :].tolist()


def timed_run(fn, stamps: HeadStamps, new: int) -> tuple[list[int], dict]:
    stamps.clear()
    t0 = time.perf_counter()
    tokens = fn()
    t1 = time.perf_counter()
    s = stamps.stamps
    if len(s) != new:
        raise AssertionError(f"expected {new} output-head calls, saw {len(s)}")
    gaps = [b - a for a, b in zip(s, s[1:])]
    return tokens, {
        "total_s": t1 - t0,
        "ttft_s": s[0] - t0,  # prompt prefill (and the call's set-up) up to the first logits
        "per_token_s_median": statistics.median(gaps) if gaps else float("nan"),
        "per_token_s_all": gaps,
        "tail_s": t1 - s[-1],  # after the last logits: sampling and the call's wrap-up
    }


def summarize(runs: list[dict], new: int) -> dict:
    total = statistics.median(r["total_s"] for r in runs)
    per_tok = statistics.median(r["per_token_s_median"] for r in runs)
    return {
        "repeats": len(runs),
        "total_s_median": total,
        "tokens_per_s": new / total,
        "ttft_s_median": statistics.median(r["ttft_s"] for r in runs),
        "per_token_s_median": per_tok,
        "decode_tokens_per_s": 1.0 / per_tok,
        "tail_s_median": statistics.median(r["tail_s"] for r in runs),
        # best of the repeats: on a shared box other processes only ever add time
        "total_s_best": min(r["total_s"] for r in runs),
        "per_token_s_best": min(r["per_token_s_median"] for r in runs),
        "runs": runs,
    }


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 8 new tokens, 1 repeat, 256 MiB bandwidth buffer, no no-cache, no profile")
    ap.add_argument("--repeats", type=int, default=None, help="timed KV-cache runs per side; the median is reported (default 3, 1 with --quick)")
    ap.add_argument("--new-tokens", type=int, default=None, help="tokens to generate (default 64, 8 with --quick)")
    ap.add_argument("--prompt-len", type=int, default=16, help="prompt tokens (default 16)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default os.cpu_count())")
    ap.add_argument("--nocache-repeats", type=int, default=None, help="timed no-cache runs per side (default 1, 0 with --quick)")
    ap.add_argument("--no-profile", action="store_true", help="skip the torch.profiler run of each side")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results, atomically (default benchmarks/results/decode.json)")
    args = ap.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    new = args.new_tokens or (8 if args.quick else 64)
    nocache_repeats = args.nocache_repeats if args.nocache_repeats is not None else (0 if args.quick else 1)
    profile = not (args.quick or args.no_profile)
    buffer_bytes = (256 << 20) if args.quick else (1 << 30)

    import torch

    from llmkit.models.config import gpt_preset
    from llmkit.models.gpt import GPT

    machine = machine_info()
    threads = torch_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
        threads["intra_op"] = torch.get_num_threads()
        threads["set_by"] = f"--threads {args.threads}"
    print_header(machine, threads)
    load = machine["loadavg_start"][0]
    if load >= (machine["cores"] or 1):
        print(
            f"WARNING : load average {load:.2f} on {machine['cores']} cores: other processes compete for the cores, and "
            "multi-threaded small matmuls then wait for descheduled threads; decode times will be inflated"
        )

    cfg = gpt_preset(PRESET)
    torch.manual_seed(0)
    ours = GPT(cfg).eval()
    hf = copy_into_hf(ours).eval()
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, cfg.vocab_size, (args.prompt_len,), generator=g).tolist()

    params = list(ours.parameters())  # unique: the tied head/embedding matrix appears once
    weight_bytes = sum(p.numel() * p.element_size() for p in params)
    wte_bytes = ours.transformer.wte.weight.numel() * ours.transformer.wte.weight.element_size()
    wpe_bytes = ours.transformer.wpe.weight.numel() * ours.transformer.wpe.weight.element_size()
    mean_pos = args.prompt_len + new / 2
    kv_bytes_mean = 2 * cfg.n_layer * cfg.n_embd * 4 * mean_pos  # keys + values read per token, at the mean position
    print(
        f"workload: preset {PRESET!r} ({sum(p.numel() for p in params):,} parameters, {weight_bytes / 1e6:.1f} MB float32 incl. the tied "
        f"head/embedding {wte_bytes / 1e6:.1f} MB once), batch 1, prompt {args.prompt_len} tokens, {new} new tokens, greedy"
    )

    bw_start = memory_bandwidth(buffer_bytes)
    print(
        f"memory  : torch copy {bw_start['torch_copy'] / 1e9:.2f} GB/s (read+write, {threads['intra_op']} threads), "
        f"torch sum {bw_start['torch_sum_read'] / 1e9:.2f} GB/s (read), numpy copy {bw_start['numpy_copy_1thread'] / 1e9:.2f} GB/s (1 thread)",
        flush=True,
    )
    print()

    stamps = {"llmkit": HeadStamps(ours.lm_head), "HF": HeadStamps(hf.lm_head)}
    fns = {
        "llmkit": lambda n, c: run_ours(ours, prompt, n, c),
        "HF": lambda n, c: run_hf(hf, prompt, n, c),
    }

    # warm-up (untimed): one short KV-cache run per side, and the reference tokens
    for name in fns:
        fns[name](min(new, 8), True)
    reference = run_ours(ours, prompt, new, True)
    print(f"reference tokens (first 12 of {new}): {reference[:12]}", flush=True)

    runs: dict[str, list[dict]] = {"llmkit": [], "HF": []}
    order = list(fns)
    for r in range(repeats):
        for name in order if r % 2 == 0 else order[::-1]:  # interleaved, order alternates
            tokens, run = timed_run(lambda: fns[name](new, True), stamps[name], new)
            assert tokens == reference, f"{name}: generated tokens differ from llmkit's reference"
            runs[name].append(run)
            print(
                f"  kv-cache {name:6s} repeat {r + 1}/{repeats}: {run['total_s']:6.2f} s total, ttft {1e3 * run['ttft_s']:7.1f} ms, "
                f"per token {1e3 * run['per_token_s_median']:6.1f} ms",
                flush=True,
            )
    cached = {name: summarize(rs, new) for name, rs in runs.items()}
    bw_mid = memory_bandwidth(buffer_bytes)  # the box is shared: measure again right after the timed runs

    nocache: dict[str, dict] = {}
    if nocache_repeats:
        nc_runs: dict[str, list[dict]] = {"llmkit": [], "HF": []}
        for r in range(nocache_repeats):
            for name in order if r % 2 == 0 else order[::-1]:
                tokens, run = timed_run(lambda: fns[name](new, False), stamps[name], new)
                assert tokens == reference, f"{name} (no cache): generated tokens differ from llmkit's reference"
                nc_runs[name].append(run)
                print(f"  no-cache {name:6s} repeat {r + 1}/{nocache_repeats}: {run['total_s']:6.2f} s total", flush=True)
        nocache = {name: summarize(rs, new) for name, rs in nc_runs.items()}

    bw_end = memory_bandwidth(buffer_bytes)
    bws = (bw_start, bw_mid, bw_end)
    bandwidth = max(b["torch_copy"] for b in bws)  # best of all: the bound is what the memory can do
    read_bandwidth = max(b["torch_sum_read"] for b in bws)
    bound = bandwidth / weight_bytes  # tokens/s if every decoded token only streamed the weights once
    read_bound = read_bandwidth / weight_bytes
    print(
        "memory  : best torch copy " + ", ".join(f"{b['torch_copy'] / 1e9:.2f}" for b in bws) + " GB/s (start, after kv-cache runs, end); "
        "best torch sum " + ", ".join(f"{b['torch_sum_read'] / 1e9:.2f}" for b in bws) + " GB/s"
    )
    print()

    headers = ["path", "model", "tokens/s", "x HF", "ttft ms", "per token ms", "best per token", "decode tok/s", "of bound", "best of bound"]
    table = []
    for path, res in (("kv-cache", cached), ("no-cache", nocache)):
        for name, s in res.items():
            s["fraction_of_bound"] = s["decode_tokens_per_s"] / bound
            s["weight_read_gb_per_s"] = s["decode_tokens_per_s"] * weight_bytes / 1e9
            s["fraction_of_bound_best"] = 1.0 / s["per_token_s_best"] / bound
            table.append(
                [
                    path,
                    name,
                    f"{s['tokens_per_s']:.2f}",
                    f"{s['tokens_per_s'] / res['HF']['tokens_per_s']:.2f}x",
                    f"{1e3 * s['ttft_s_median']:.1f}",
                    f"{1e3 * s['per_token_s_median']:.1f}",
                    f"{1e3 * s['per_token_s_best']:.1f}",
                    f"{s['decode_tokens_per_s']:.2f}",
                    f"{100 * s['fraction_of_bound']:.1f}%" if path == "kv-cache" else "",
                    f"{100 * s['fraction_of_bound_best']:.1f}%" if path == "kv-cache" else "",
                ]
            )
    print_table(headers, table)
    ratio = cached["llmkit"]["tokens_per_s"] / cached["HF"]["tokens_per_s"]
    decode_ratio = cached["llmkit"]["decode_tokens_per_s"] / cached["HF"]["decode_tokens_per_s"]
    frac = cached["llmkit"]["fraction_of_bound"]
    summary = [
        f"kv-cache end-to-end: llmkit {ratio:.2f}x HF tokens/s; goal >= {GOAL_RATIO:.1f}x: {verdict(ratio, GOAL_RATIO)}",
        f"kv-cache steady-state decode: llmkit {decode_ratio:.2f}x HF (best of the repeats: "
        f"{cached['HF']['per_token_s_best'] / cached['llmkit']['per_token_s_best']:.2f}x)",
        f"bandwidth bound: {weight_bytes / 1e6:.1f} MB/token into {bandwidth / 1e9:.2f} GB/s copy bandwidth = {bound:.2f} tokens/s; "
        f"llmkit decode reaches {100 * frac:.1f}% of it (best repeat {100 * cached['llmkit']['fraction_of_bound_best']:.1f}%); "
        f"goal >= {100 * GOAL_BOUND:.0f}%: {verdict(frac, GOAL_BOUND)}",
        f"against the read-only bandwidth ({read_bandwidth / 1e9:.2f} GB/s, torch sum) the bound is {read_bound:.2f} tokens/s: "
        f"llmkit {100 * cached['llmkit']['decode_tokens_per_s'] / read_bound:.1f}%, HF {100 * cached['HF']['decode_tokens_per_s'] / read_bound:.1f}%",
    ]
    for line in summary:
        print(line)
    print("tokens identical to llmkit's reference in every timed run (asserted)")

    prof = {}
    if profile:
        print()
        n_prof = min(new, 16)
        for name in fns:
            prof[name] = profile_top_ops(lambda name=name: fns[name](n_prof, True))
            print_profile(f"{name} kv-cache generate, {n_prof} new tokens", prof[name])
    for s in stamps.values():
        s.remove()

    machine["loadavg_end"] = list(os.getloadavg())
    print(f"load average at end: {', '.join(f'{x:.2f}' for x in machine['loadavg_end'])}")
    out = {
        "machine": machine,
        "threads": threads,
        "quick": args.quick,
        "workload": {"preset": PRESET, "batch": 1, "prompt_len": args.prompt_len, "new_tokens": new, "greedy": True, "dtype": "float32"},
        "weights": {
            "bytes_per_token": weight_bytes,
            "tied_head_embedding_bytes": wte_bytes,
            "position_embedding_bytes": wpe_bytes,
            "kv_cache_bytes_read_at_mean_position": kv_bytes_mean,
        },
        "memory_bandwidth": {
            "start": bw_start,
            "after_kv_cache_runs": bw_mid,
            "end": bw_end,
            "bound_bandwidth_bytes_per_s": bandwidth,
            "bound_tokens_per_s": bound,
            "read_bandwidth_bytes_per_s": read_bandwidth,
            "read_bound_tokens_per_s": read_bound,
        },
        "hf_attn_implementation": getattr(hf.config, "_attn_implementation", "unknown"),
        "reference_tokens": reference,
        "kv_cache": cached,
        "no_cache": nocache,
        "ratio_tokens_per_s": ratio,
        "ratio_decode": decode_ratio,
        "goals": {"ratio": f">= {GOAL_RATIO}x HF", "bound": f">= {100 * GOAL_BOUND:.0f}% of the copy-bandwidth bound"},
        "profile": prof,
        "summary": summary,
    }
    write_results(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
