"""GPT training-step benchmark: llmkit's GPT versus ``transformers.GPT2LMHeadModel`` on CPU.

Both models get the same configuration (the ``small`` preset: 6 layers, 6 heads, width 384,
context 256), the same weights (ours copied into HF, Conv1D weights transposed), the same
inputs (batch 8 x 256 tokens) and the same loss (mean token cross-entropy). The losses (and
a few gradients) are checked to agree to 1e-4 before anything is timed. Then the two run
interleaved, step by step, float32, ``torch.set_num_threads(os.cpu_count())``:

- ``fwd+bwd``: forward, loss, backward (the timer stops when ``backward()`` returns);
- ``fwd+bwd+AdamW``: the same plus ``torch.optim.AdamW.step()`` (same settings both sides).

Vocabulary 8,192 and 50,304 (GPT-2's 50,257 padded to a multiple of 64).

Run from the repository root::

    .venv/bin/python benchmarks/train_gpt.py            # full run (~3 minutes on 2 cores)
    .venv/bin/python benchmarks/train_gpt.py --quick    # smoke run: vocab 8192, 2 steps, batch 2

See benchmarks/README.md for what each row means and the measured numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from _common import machine_info, print_table, verdict, write_results  # benchmarks/ is on sys.path when a script runs

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "train_gpt.json"
PRESET = "small"
VOCABS = (8192, 50304)
GOAL = 1.2  # "our training step throughput >= 1.2x HF's"
LR = 1e-4

# ----------------------------------------------------------------------------- helpers (decode.py and gpu_train.py import these)


def torch_threads() -> dict:
    """Set torch's intra-op threads to every core and report what torch runs with."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    return {
        "intra_op": torch.get_num_threads(),
        "inter_op": torch.get_num_interop_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
        "set_by": "os.cpu_count()",
    }


def print_header(machine: dict, threads: dict | None = None) -> None:
    print(f"machine : {machine['cpu']}, {machine['cores']} cores, {machine['platform']}")
    print(f"python  : {machine['python']}; " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()))
    print(f"date    : {machine['date']}; load average {', '.join(f'{x:.2f}' for x in machine['loadavg_start'])}")
    if threads:
        print(
            f"threads : torch intra-op {threads['intra_op']} (set by {threads.get('set_by', '?')}), inter-op {threads['inter_op']}, "
            f"cpu capability {threads['cpu_capability']}, OMP_NUM_THREADS {threads['OMP_NUM_THREADS']}"
        )


def copy_into_hf(model):
    """``transformers.GPT2LMHeadModel`` with our config and our weights (Conv1D weights transposed)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.config
    special = min(50256, c.vocab_size - 1)  # GPT-2's <|endoftext|>, kept inside a small vocabulary
    hf_cfg = GPT2Config(
        vocab_size=c.vocab_size,
        n_positions=c.context_length,
        n_embd=c.n_embd,
        n_layer=c.n_layer,
        n_head=c.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=c.layer_norm_eps,
        bos_token_id=special,
        eos_token_id=special,
        pad_token_id=special,
    )
    hf = GPT2LMHeadModel(hf_cfg)
    sd = {}
    for k, v in model.state_dict().items():
        if k == "lm_head.weight":  # tied to transformer.wte.weight on both sides
            continue
        transposed = any(k.endswith(f"{m}.weight") for m in ("c_attn", "c_proj", "c_fc"))
        sd[k] = v.t().contiguous() if transposed else v.clone()
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert all("lm_head" in m or "attn.bias" in m or "masked_bias" in m for m in missing), missing
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr(), "HF head is not tied"
    return hf


def profile_top_ops(fn, row_limit: int = 12) -> list[dict]:
    """Run ``fn`` once under torch.profiler (CPU) and return the top ops by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [
        {
            "op": e.key,
            "self_cpu_ms": e.self_cpu_time_total / 1e3,
            "self_cpu_share": e.self_cpu_time_total / total,
            "calls": e.count,
        }
        for e in events[:row_limit]
    ] + [{"op": "(total self CPU)", "self_cpu_ms": total / 1e3, "self_cpu_share": 1.0, "calls": 0}]


def print_profile(title: str, rows: list[dict]) -> None:
    print(f"  profile {title}: top ops by self CPU time")
    print_table(
        ["op", "self ms", "share", "calls"],
        [[r["op"][:60], f"{r['self_cpu_ms']:.1f}", f"{100 * r['self_cpu_share']:.1f}%", str(r["calls"])] for r in rows],
    )


# ----------------------------------------------------------------------------- training step


class Side:
    """One model, its optimizer and a loss closure over the shared batch."""

    def __init__(self, name: str, model, loss_fn):
        import torch

        self.name = name
        self.model = model.train()
        self.loss_fn = loss_fn
        self.opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.1)
        self.fwd_bwd: list[float] = []
        self.opt_step: list[float] = []

    def step(self, record: bool) -> float:
        self.opt.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        loss = self.loss_fn()
        loss.backward()
        t1 = time.perf_counter()
        self.opt.step()
        t2 = time.perf_counter()
        if record:
            self.fwd_bwd.append(t1 - t0)
            self.opt_step.append(t2 - t1)
        return loss.item()


def check_agreement(ours, hf, x, y, tol: float = 1e-4) -> dict:
    """Loss and a few gradients of the two models on the same batch (nothing is stepped)."""
    import torch.nn.functional as F

    ours.zero_grad(set_to_none=True)
    hf.zero_grad(set_to_none=True)
    _, per_token = ours(x, y)
    l_ours = per_token.mean()
    l_ours.backward()
    l_hf = F.cross_entropy(hf(x).logits.flatten(0, 1), y.flatten())
    l_hf.backward()
    loss_diff = abs(l_ours.item() - l_hf.item())
    pairs = {
        "transformer.wte.weight": (ours.transformer.wte.weight.grad, hf.transformer.wte.weight.grad),
        "h.0.attn.c_attn.weight": (ours.transformer.h[0].attn.c_attn.weight.grad, hf.transformer.h[0].attn.c_attn.weight.grad.t()),
        "h.-1.mlp.c_fc.weight": (ours.transformer.h[-1].mlp.c_fc.weight.grad, hf.transformer.h[-1].mlp.c_fc.weight.grad.t()),
    }
    grad_diff = {k: (a - b).abs().max().item() for k, (a, b) in pairs.items()}
    ours.zero_grad(set_to_none=True)
    hf.zero_grad(set_to_none=True)
    if loss_diff > tol:
        raise AssertionError(f"losses differ: ours {l_ours.item():.6f} vs HF {l_hf.item():.6f}")
    if max(grad_diff.values()) > tol:
        raise AssertionError(f"gradients differ: {grad_diff}")
    return {"loss_ours": l_ours.item(), "loss_hf": l_hf.item(), "loss_abs_diff": loss_diff, "grad_max_abs_diff": grad_diff}


def bench_vocab(vocab: int, batch: int, warmup: int, steps: int, profile: bool, seed: int = 0) -> dict:
    import torch
    import torch.nn.functional as F

    from llmkit.models.config import gpt_preset
    from llmkit.models.gpt import GPT

    cfg = gpt_preset(PRESET, vocab_size=vocab)
    torch.manual_seed(seed)
    ours = GPT(cfg)
    hf = copy_into_hf(ours)
    n_params = ours.num_parameters()
    assert n_params == sum(p.numel() for p in hf.parameters()), "parameter counts differ"
    g = torch.Generator().manual_seed(seed + 1)
    data = torch.randint(0, vocab, (batch, cfg.context_length + 1), generator=g)
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    tokens = x.numel()
    attn_impl = getattr(hf.config, "_attn_implementation", "unknown")
    print(
        f"-- vocab {vocab:,}: {cfg.n_layer} layers, {cfg.n_head} heads, width {cfg.n_embd}, context {cfg.context_length}, "
        f"batch {batch} ({tokens:,} tokens/step), {n_params:,} parameters; HF attention: {attn_impl}",
        flush=True,
    )

    ours.train()
    hf.train()
    check = check_agreement(ours, hf, x, y)
    print(
        f"   losses agree: ours {check['loss_ours']:.6f}, HF {check['loss_hf']:.6f} (|diff| {check['loss_abs_diff']:.1e}); "
        f"max |grad diff| {max(check['grad_max_abs_diff'].values()):.1e}",
        flush=True,
    )

    sides = [
        Side("llmkit", ours, lambda: ours(x, y, return_logits=False)[1].mean()),  # as llmkit.training does
        Side("HF", hf, lambda: F.cross_entropy(hf(x).logits.flatten(0, 1), y.flatten())),
    ]
    for i in range(warmup + steps):
        record = i >= warmup
        for s in sides if i % 2 == 0 else sides[::-1]:  # interleaved, order alternates each step
            s.step(record)
        if record:
            a, b = sides
            print(
                f"   step {i - warmup + 1}/{steps}: llmkit {a.fwd_bwd[-1]:.3f}+{a.opt_step[-1]:.3f} s, "
                f"HF {b.fwd_bwd[-1]:.3f}+{b.opt_step[-1]:.3f} s (fwd+bwd + AdamW)",
                flush=True,
            )

    rows = []
    for s in sides:
        full = [a + b for a, b in zip(s.fwd_bwd, s.opt_step)]
        rows.append(
            {
                "side": s.name,
                "fwd_bwd_s_median": statistics.median(s.fwd_bwd),
                "adamw_s_median": statistics.median(s.opt_step),
                "step_s_median": statistics.median(full),
                "fwd_bwd_tokens_per_s": tokens / statistics.median(s.fwd_bwd),
                "step_tokens_per_s": tokens / statistics.median(full),
                "fwd_bwd_s_all": s.fwd_bwd,
                "adamw_s_all": s.opt_step,
            }
        )
    ours_row, hf_row = rows
    result = {
        "vocab": vocab,
        "config": {"preset": PRESET, "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd, "context_length": cfg.context_length},
        "batch": batch,
        "tokens_per_step": tokens,
        "parameters": n_params,
        "hf_attn_implementation": attn_impl,
        "warmup_steps": warmup,
        "timed_steps": steps,
        "agreement": check,
        "rows": rows,
        "ratio_fwd_bwd": ours_row["fwd_bwd_tokens_per_s"] / hf_row["fwd_bwd_tokens_per_s"],
        "ratio_step": ours_row["step_tokens_per_s"] / hf_row["step_tokens_per_s"],
    }
    if profile:
        result["profile"] = {}
        for s in sides:
            s.opt.zero_grad(set_to_none=True)
            result["profile"][s.name] = profile_top_ops(lambda s=s: s.step(False))
            print_profile(f"vocab {vocab:,} {s.name} (one fwd+bwd+AdamW step)", result["profile"][s.name])
    return result


def report(results: list[dict]) -> list[str]:
    headers = ["vocab", "model", "fwd+bwd s", "fwd+bwd tok/s", "AdamW s", "step tok/s", "llmkit / this (fwd+bwd)", "llmkit / this (step)"]
    table, lines = [], []
    for r in results:
        hf_row = r["rows"][1]
        for row in r["rows"]:
            table.append(
                [
                    f"{r['vocab']:,}",
                    row["side"],
                    f"{row['fwd_bwd_s_median']:.3f}",
                    f"{row['fwd_bwd_tokens_per_s']:,.0f}",
                    f"{row['adamw_s_median']:.3f}",
                    f"{row['step_tokens_per_s']:,.0f}",
                    f"{row['fwd_bwd_tokens_per_s'] / hf_row['fwd_bwd_tokens_per_s']:.2f}x",
                    f"{row['step_tokens_per_s'] / hf_row['step_tokens_per_s']:.2f}x",
                ]
            )
        for what, key in (("fwd+bwd", "ratio_fwd_bwd"), ("fwd+bwd+AdamW", "ratio_step")):
            lines.append(f"vocab {r['vocab']:,} {what}: llmkit {r[key]:.2f}x HF tokens/s; goal >= {GOAL:.1f}x: {verdict(r[key], GOAL)}")
    print_table(headers, table)
    for line in lines:
        print(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: vocab 8192 only, batch 2, 1 warm-up + 2 timed steps, no profile")
    ap.add_argument("--vocab", type=int, action="append", help="vocabulary size (repeatable; default 8192 and 50304)")
    ap.add_argument("--batch", type=int, default=None, help="sequences per step (default 8; 2 with --quick)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per side (default: 10 at vocab <= 8192, 5 above; 2 with --quick)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps per side first (default 2 at vocab <= 8192, 1 above)")
    ap.add_argument("--no-profile", action="store_true", help="skip the torch.profiler step of each side")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results, atomically (default benchmarks/results/train_gpt.json)")
    args = ap.parse_args(argv)
    vocabs = args.vocab or ([8192] if args.quick else list(VOCABS))
    batch = args.batch or (2 if args.quick else 8)
    profile = not (args.quick or args.no_profile)


    machine = machine_info(("llmkit", "torch", "transformers", "numpy"))
    threads = torch_threads()
    print_header(machine, threads)
    print(f"workload: preset {PRESET!r}, float32, CPU, batch {batch}; AdamW(lr={LR}, betas=(0.9, 0.95), weight_decay=0.1) on both sides")
    print()

    results = []
    for vocab in vocabs:
        big = vocab > 8192
        steps = args.steps or (2 if args.quick else (5 if big else 10))
        warmup = args.warmup if args.warmup is not None else (1 if args.quick or big else 2)
        results.append(bench_vocab(vocab, batch, warmup, steps, profile))
        print()
    summary = report(results)
    machine["loadavg_end"] = list(os.getloadavg())
    print(f"load average at end: {', '.join(f'{x:.2f}' for x in machine['loadavg_end'])}")
    out = {"machine": machine, "threads": threads, "quick": args.quick, "goal": f">= {GOAL}x HF tokens/s", "results": results, "summary": summary}
    write_results(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
