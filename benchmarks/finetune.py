"""Fine-tuning benchmark: full fine-tuning versus LoRA (llmkit's and PEFT's) on gpt2-124m, CPU.

The workload is one causal-LM fine-tuning step: forward, mean token cross-entropy, backward,
``torch.optim.AdamW.step()`` (lr 1e-4, betas (0.9, 0.95), weight decay 0.1, on the trainable
parameters only), ``zero_grad(set_to_none=True)``. Batch 8 x context 128, random token ids
(fixed seed), float32, ``torch.set_num_threads(os.cpu_count())``. Configurations:

- ``ours-full``:   llmkit's ``build_model("gpt", "gpt2-124m")``, every parameter trained;
- ``ours-lora8`` / ``ours-lora16``: the same model, ``llmkit.models.lora`` (freeze,
  ``replace_linear_with_lora(rank r, alpha 2r, targets c_attn, c_proj, c_fc)``, mark_trainable);
- ``peft-lora8`` / ``peft-lora16``: the model exported with ``save_model`` and loaded by
  ``transformers.AutoModelForCausalLM.from_pretrained``, wrapped by ``peft.get_peft_model``
  with ``LoraConfig(r, lora_alpha=2r, target_modules=[c_attn, c_proj, c_fc], fan_in_fan_out=True)``;
- ``hf-full``:     the exported HF model, every parameter trained (reference).

Two phases, each in fresh subprocesses of this script:

1. memory: one process per configuration (so no configuration sees another's freed memory or
   allocator caches). It builds the model, trims the C heap, then runs two steps under
   ``llmkit.training.perf.PeakMemory`` (RSS sampled every 2 ms; the first step creates the
   grads and AdamW's state, the second runs with them) and reports that peak above the loaded
   model, the process's peak RSS (``getrusage`` ru_maxrss), the model's own bytes and, from one
   more forward pass, the bytes autograd saves for backward (the activations).
2. time: one process holding every configuration; the steps run interleaved (in a new seeded
   random order each round), so load on the shared box hits every configuration alike. Medians after the
   warm-up. Before timing it checks that llmkit's weights equal the export's, copies each of
   our LoRA A matrices into PEFT's (B is zero on both sides), and asserts that the first-step
   losses of ours and PEFT's (and of ours-full and hf-full) agree; the later losses of each
   pair are compared too (same start, same data, same optimizer: they should track).

Run from the repository root::

    .venv/bin/python benchmarks/finetune.py            # full run (~4 minutes on 2 cores, more when the box is shared)
    .venv/bin/python benchmarks/finetune.py --quick    # smoke run: batch 2, context 32, 2 timed steps

See benchmarks/README.md for what each row means and the measured numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402
from train_gpt import machine_info, print_header, print_profile, print_table, profile_top_ops, torch_threads, verdict  # noqa: E402

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "finetune.json"
PRESET = "gpt2-124m"
TARGETS = ["c_attn", "c_proj", "c_fc"]
RANKS = (8, 16)
LR, BETAS, WEIGHT_DECAY = 1e-4, (0.9, 0.95), 0.1
MODEL_SEED, DATA_SEED, LORA_SEED, ORDER_SEED = 0, 1, 2, 1000
GOAL_MEMORY = 0.60  # "LoRA peak memory <= 60 % of full fine-tuning"
GOAL_PEFT = 1.0  # "PEFT step time / our LoRA step time >= 1.0x"

# name -> (stack, LoRA rank or None for full fine-tuning)
CONFIGS = {
    "ours-full": ("llmkit", None),
    "ours-lora8": ("llmkit", 8),
    "ours-lora16": ("llmkit", 16),
    "peft-lora8": ("peft", 8),
    "peft-lora16": ("peft", 16),
    "hf-full": ("hf", None),
}
# memory phase order: each ours/PEFT pair sits symmetrically, so a slow drift in load hits both alike
MEMORY_ORDER = ["ours-full", "ours-lora8", "peft-lora8", "peft-lora16", "ours-lora16", "hf-full"]


# ----------------------------------------------------------------------------- building


def _rss() -> int:
    from llmkit.training.perf import PeakMemory

    return PeakMemory.rss_bytes() or 0


def _trim_heap() -> bool:
    """Give freed C-heap memory back to the OS (glibc), so the RSS baseline holds no garbage."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def build(name: str, export_dir: str):
    """``(model, loss_fn(x, y), trainable parameters)`` for configuration ``name``, in train mode."""
    import torch
    import torch.nn.functional as F

    stack, rank = CONFIGS[name]
    if stack == "llmkit":
        from llmkit.models.lora import freeze, mark_trainable, replace_linear_with_lora
        from llmkit.models.zoo import build_model

        torch.manual_seed(MODEL_SEED)  # the same seed save_model's export was built with
        model = build_model("gpt", PRESET)
        if rank is not None:
            freeze(model)
            torch.manual_seed(LORA_SEED)
            replace_linear_with_lora(model, rank, 2 * rank, targets=TARGETS)
            mark_trainable(model)

        def loss_fn(x, y, model=model):
            return model(x, y, return_logits=False)[1].mean()  # as llmkit.training does: no (B, T, V) logits held

    else:
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        model = AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.float32)
        if rank is not None:
            from peft import LoraConfig, get_peft_model

            torch.manual_seed(LORA_SEED)
            cfg = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(TARGETS), lora_dropout=0.0, bias="none", fan_in_fan_out=True)
            model = get_peft_model(model, cfg)

        def loss_fn(x, y, model=model):  # not labels=, which would shift the targets a second time
            return F.cross_entropy(model(input_ids=x).logits.flatten(0, 1), y.flatten())

    model.train()
    with torch.no_grad():  # from_pretrained may map the file lazily: read every weight once so all are resident
        for p in model.parameters():
            p.sum()
    params = [p for p in model.parameters() if p.requires_grad]
    return model, loss_fn, params


def model_bytes(model) -> int:
    """Parameters and buffers, tied ones once."""
    seen, n = set(), 0
    for t in (*model.parameters(), *model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            n += t.numel() * t.element_size()
    return n


def make_batch(vocab: int, batch: int, context: int):
    import torch

    g = torch.Generator().manual_seed(DATA_SEED)
    data = torch.randint(0, vocab, (batch, context + 1), generator=g)
    return data[:, :-1].contiguous(), data[:, 1:].contiguous()


class Runner:
    """One configuration: its model, AdamW over its trainable parameters, and per-step timings."""

    def __init__(self, name: str, export_dir: str):
        import torch

        self.name = name
        self.model, self.loss_fn, params = build(name, export_dir)
        self.trainable = sum(p.numel() for p in params)
        self.total = sum(p.numel() for p in self.model.parameters())
        self.opt = torch.optim.AdamW(params, lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY)
        self.fwd: list[float] = []
        self.bwd: list[float] = []
        self.adamw: list[float] = []
        self.losses: list[float] = []

    def step(self, x, y, record: bool = True) -> float:
        self.opt.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        loss = self.loss_fn(x, y)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        self.opt.step()
        t3 = time.perf_counter()
        self.losses.append(loss.item())
        if record:
            self.fwd.append(t1 - t0)
            self.bwd.append(t2 - t1)
            self.adamw.append(t3 - t2)
        return loss.item()

    def summary(self) -> dict:
        steps = [a + b + c for a, b, c in zip(self.fwd, self.bwd, self.adamw)]
        med = statistics.median
        return {
            "trainable_parameters": self.trainable,
            "parameters": self.total,
            "step_s_median": med(steps),
            "fwd_s_median": med(self.fwd),
            "bwd_s_median": med(self.bwd),
            "adamw_s_median": med(self.adamw),
            "step_s_min": min(steps),
            "step_s_all": steps,
            "fwd_s_all": self.fwd,
            "bwd_s_all": self.bwd,
            "adamw_s_all": self.adamw,
            "losses": self.losses,
        }


# ----------------------------------------------------------------------------- workers (subprocesses)


def saved_for_backward_bytes(r: Runner, x, y) -> int:
    """Bytes of the distinct tensors autograd keeps for backward in one forward pass (the
    activations), parameters excluded. Measured after the timed steps, outside PeakMemory."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in r.model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = st.nbytes()
        return t

    r.opt.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = r.loss_fn(x, y)
    del loss
    return sum(seen.values())


def worker_export(a: argparse.Namespace) -> dict:
    """Build the seed's model and write it in HF GPT-2 layout (the parent process stays free of
    torch, so its own peak RSS, which children inherit as ru_maxrss, stays small)."""
    import torch

    from llmkit.models.zoo import build_model, save_model

    threads = torch_threads()
    torch.manual_seed(MODEL_SEED)
    model = build_model("gpt", PRESET)
    save_model(model, a.export_dir, overwrite=True)
    return {"threads": threads, "parameters": sum(p.numel() for p in model.parameters()), "vocab_size": model.config.vocab_size}


def worker_memory(name: str, a: argparse.Namespace) -> dict:
    import resource

    from llmkit.training.perf import PeakMemory

    threads = torch_threads()
    rss_imports = _rss()
    r = Runner(name, a.export_dir)
    x, y = make_batch(r.model.config.vocab_size, a.batch, a.context)
    trimmed = _trim_heap()
    rss_model = _rss()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with PeakMemory("cpu") as mem:
        for _ in range(a.mem_steps):
            r.step(x, y)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    s = r.summary()
    saved = saved_for_backward_bytes(r, x, y)
    return {
        "config": name,
        "threads": threads,
        "trainable_parameters": r.trainable,
        "parameters": r.total,
        "model_bytes": model_bytes(r.model),
        "grad_and_adamw_bytes_expected": 3 * 4 * r.trainable,  # float32 grad + exp_avg + exp_avg_sq
        "saved_for_backward_bytes": saved,
        "logits_bytes": x.numel() * r.model.config.vocab_size * 4,
        "rss_after_imports": rss_imports,
        "rss_model_loaded": rss_model,
        "malloc_trim": trimmed,
        "training_peak_above_model": mem.peak_bytes,
        "training_peak_rss": rss_model + (mem.peak_bytes or 0),
        "ru_maxrss_before_training": maxrss_before,
        "ru_maxrss": maxrss,
        "steps": a.mem_steps,
        "step_s_all": s["step_s_all"],
        "losses": s["losses"],
    }


def worker_time(names: list[str], a: argparse.Namespace) -> dict:
    import torch

    threads = torch_threads()
    runners = {}
    for name in names:
        t0 = time.perf_counter()
        runners[name] = Runner(name, a.export_dir)
        print(f"   built {name}: {runners[name].trainable:,} trainable of {runners[name].total:,} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
    any_model = runners[names[0]].model
    vocab = any_model.config.vocab_size
    x, y = make_batch(vocab, a.batch, a.context)
    checks: dict = {}

    # our seed-built weights are the export's weights (ours-full against hf-full, Conv1D transposed)
    if "ours-full" in runners and "hf-full" in runners:
        hf_sd = dict(runners["hf-full"].model.named_parameters())
        worst = 0.0
        for k, v in runners["ours-full"].model.named_parameters():
            w = hf_sd[k]
            if k.endswith(tuple(f"{t}.weight" for t in TARGETS)):  # HF's Conv1D stores (in, out)
                w = w.t()
            worst = max(worst, (v - w).abs().max().item())
        checks["weights_ours_vs_export_max_abs_diff"] = worst
        assert worst == 0.0, f"llmkit's weights differ from the export by {worst}"

    # the same LoRA start on both sides: copy our A (Kaiming) into PEFT's; B is zero on both
    for r in RANKS:
        ours, peft_ = runners.get(f"ours-lora{r}"), runners.get(f"peft-lora{r}")
        if ours is None or peft_ is None:
            continue
        assert ours.trainable == peft_.trainable, f"rank {r}: trainable parameters differ: ours {ours.trainable:,}, PEFT {peft_.trainable:,}"
        peft_mods = {n.replace("base_model.model.", ""): m for n, m in peft_.model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")}
        from llmkit.models.lora import lora_modules

        ours_mods = lora_modules(ours.model)
        assert set(ours_mods) == set(peft_mods), f"rank {r}: adapted modules differ: {sorted(set(ours_mods) ^ set(peft_mods))[:4]}"
        b_max = 0.0
        with torch.no_grad():
            for n, m in ours_mods.items():
                pm = peft_mods[n]
                pm.lora_A["default"].weight.copy_(m.lora_A.weight)
                b_max = max(b_max, m.lora_B.weight.abs().max().item(), pm.lora_B["default"].weight.abs().max().item())
        checks[f"rank{r}_adapted_modules"] = len(ours_mods)
        checks[f"rank{r}_lora_B_max_abs_at_start"] = b_max

    import random

    total = a.warmup + a.steps
    orders = []
    for i in range(total):
        record = i >= a.warmup
        order = list(names)
        random.Random(ORDER_SEED + i).shuffle(order)  # a new order each round: no configuration always follows the same one
        orders.append(order)
        for name in order:
            runners[name].step(x, y, record)
        print(
            f"   round {i + 1}/{total}{'' if record else ' (warm-up)'}: "
            + ", ".join(f"{n} {sum(t[-1] for t in (runners[n].fwd, runners[n].bwd, runners[n].adamw)) if record else float('nan'):.2f} s" for n in names),
            file=sys.stderr,
            flush=True,
        )

    # the pairs start from the same weights on the same batch: first losses must agree, later ones track
    pairs = [("ours-full", "hf-full")] + [(f"ours-lora{r}", f"peft-lora{r}") for r in RANKS]
    for ours_name, peer in pairs:
        if ours_name in runners and peer in runners:
            la, lb = runners[ours_name].losses, runners[peer].losses
            diffs = [abs(p - q) for p, q in zip(la, lb)]
            checks[f"{ours_name}_vs_{peer}"] = {"first_loss_ours": la[0], "first_loss_peer": lb[0], "first_abs_diff": diffs[0], "max_abs_diff_all_steps": max(diffs), "steps_compared": len(diffs)}
            assert diffs[0] <= 1e-4, f"{ours_name} and {peer} disagree on the first loss: {la[0]:.6f} vs {lb[0]:.6f}"

    prof = {}
    if a.profile:
        for name in a.profile:
            if name in runners:
                runners[name].opt.zero_grad(set_to_none=True)
                prof[name] = profile_top_ops(lambda n=name: runners[n].step(x, y, record=False), row_limit=15)
    return {
        "threads": threads,
        "hf_attn_implementation": getattr(getattr(runners.get("hf-full", runners[names[-1]]).model, "config", None), "_attn_implementation", "unknown"),
        "checks": checks,
        "round_orders": orders,
        "rows": {n: r.summary() for n, r in runners.items()},
        "profile": prof,
    }


WORKER_ENV: dict[str, str] = {}  # extra environment for the workers (--mmap-threshold)


def spawn(args: list[str], timeout: float | None = None) -> dict:
    """Run this script as a worker; it writes its result as JSON to a temporary file."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    try:
        env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1", **WORKER_ENV}
        subprocess.run([sys.executable, __file__, *args, "--result-file", out], check=True, timeout=timeout, env=env)
        with open(out) as f:
            return json.load(f)
    finally:
        os.unlink(out)


# ----------------------------------------------------------------------------- main


def mib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: batch 2, context 32, 1 warm-up + 2 timed rounds, no profile")
    ap.add_argument("--batch", type=int, default=None, help="sequences per step (default 8; 2 with --quick)")
    ap.add_argument("--context", type=int, default=None, help="tokens per sequence (default 128; 32 with --quick)")
    ap.add_argument("--mem-steps", type=int, default=None, help="steps under PeakMemory in each memory process (default 2)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed interleaved rounds first (default 1)")
    ap.add_argument("--steps", type=int, default=None, help="timed interleaved rounds (default 6; 2 with --quick)")
    ap.add_argument("--no-hf-full", action="store_true", help="leave out the hf-full reference configuration")
    ap.add_argument("--no-profile", action="store_true", help="skip the torch.profiler step of ours-lora8 and peft-lora8")
    ap.add_argument(
        "--mmap-threshold",
        type=int,
        default=None,
        help="set MALLOC_MMAP_THRESHOLD_ (bytes) in the workers: a fixed glibc mmap threshold, so freed tensors go back to the OS "
        "(default: unset, glibc's dynamic threshold, which keeps freed blocks of up to 32 MiB in the heap)",
    )
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results, atomically (default benchmarks/results/finetune.json)")
    # worker mode (internal)
    ap.add_argument("--worker", choices=["export", "memory", "time"], help=argparse.SUPPRESS)
    ap.add_argument("--configs", help=argparse.SUPPRESS)
    ap.add_argument("--export-dir", help=argparse.SUPPRESS)
    ap.add_argument("--profile", help=argparse.SUPPRESS)
    ap.add_argument("--result-file", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.batch = args.batch or (2 if args.quick else 8)
    args.context = args.context or (32 if args.quick else 128)
    args.mem_steps = args.mem_steps or 2
    args.warmup = args.warmup if args.warmup is not None else 1
    args.steps = args.steps or (2 if args.quick else 6)

    if args.worker:
        import warnings

        warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' deprecation notes inside PEFT
        names = args.configs.split(",") if args.configs else []
        args.profile = args.profile.split(",") if args.profile else []
        if args.worker == "export":
            res = worker_export(args)
        elif args.worker == "memory":
            res = worker_memory(names[0], args)
        else:
            res = worker_time(names, args)
        with open(args.result_file, "w") as f:
            json.dump(res, f)
        return 0

    # the parent never imports torch: a child's ru_maxrss starts at its parent's peak RSS

    t_start = time.perf_counter()
    machine = machine_info(("llmkit", "torch", "transformers", "peft", "numpy"))
    if args.mmap_threshold is not None:
        WORKER_ENV["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
    malloc = f"MALLOC_MMAP_THRESHOLD_={args.mmap_threshold}" if args.mmap_threshold is not None else "glibc default (dynamic mmap threshold)"
    export_dir_obj = tempfile.TemporaryDirectory(prefix="llmkit-finetune-")
    export_dir = export_dir_obj.name
    exported = spawn(["--worker", "export", "--export-dir", export_dir])  # the weights every configuration starts from
    threads = exported["threads"]
    print_header(machine, threads)
    if machine["loadavg_start"][0] >= (machine["cores"] or 1):
        print(f"WARNING : load average {machine['loadavg_start'][0]:.2f} on {machine['cores']} cores: other processes compete; times will be inflated")
    names = [n for n in MEMORY_ORDER if not (args.no_hf_full and n == "hf-full")]
    print(
        f"workload: {PRESET}, float32, CPU, batch {args.batch} x context {args.context}; AdamW(lr={LR}, betas={BETAS}, "
        f"weight_decay={WEIGHT_DECAY}) on the trainable parameters; LoRA alpha = 2 r, targets {', '.join(TARGETS)}"
    )
    print(f"malloc  : {malloc}")
    print(f"phases  : memory ({args.mem_steps} steps, one fresh process per configuration), then time (one process, {args.warmup} warm-up + {args.steps} interleaved rounds)")
    print()

    try:
        common = ["--export-dir", export_dir, "--batch", str(args.batch), "--context", str(args.context)]

        memory: dict[str, dict] = {}
        for name in names:
            t0 = time.perf_counter()
            m = spawn(["--worker", "memory", "--configs", name, "--mem-steps", str(args.mem_steps), *common])
            memory[name] = m
            print(
                f"-- memory {name:11s}: model {mib(m['model_bytes'])} MiB, RSS loaded {mib(m['rss_model_loaded'])} MiB, "
                f"training peak +{mib(m['training_peak_above_model'])} MiB, peak RSS {mib(m['ru_maxrss'])} MiB, "
                f"saved for backward {mib(m['saved_for_backward_bytes'])} MiB; "
                f"steps {', '.join(f'{s:.2f}' for s in m['step_s_all'])} s ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
        load_mid = list(os.getloadavg())
        print()
        profile = [] if (args.quick or args.no_profile) else ["ours-lora8", "peft-lora8"]
        t0 = time.perf_counter()
        print(f"-- time: {', '.join(names)} in one process, interleaved", flush=True)
        timing = spawn(
            ["--worker", "time", "--configs", ",".join(names), "--warmup", str(args.warmup), "--steps", str(args.steps), *common]
            + (["--profile", ",".join(profile)] if profile else [])
        )
        print(f"   ({time.perf_counter() - t0:.0f} s)")
    finally:
        export_dir_obj.cleanup()
    print()

    rows_t = timing["rows"]
    checks = timing["checks"]
    # trainable parameter counts: ours and PEFT's must agree exactly
    counts = {}
    for r in RANKS:
        ours, peft_ = memory[f"ours-lora{r}"]["trainable_parameters"], memory[f"peft-lora{r}"]["trainable_parameters"]
        assert ours == peft_ == rows_t[f"ours-lora{r}"]["trainable_parameters"], f"rank {r}: ours {ours:,} vs PEFT {peft_:,}"
        counts[r] = ours

    full = memory["ours-full"]
    full_t = rows_t["ours-full"]
    headers = ["config", "trainable", "model MiB", "grad+AdamW MiB", "activations MiB", "RSS loaded", "train peak +MiB", "peak RSS MiB", "peak RSS / full", "+peak / full", "step s", "fwd s", "bwd s", "AdamW s", "full / this", "this / ours"]
    table = []
    for name in names:
        m, t = memory[name], rows_t[name]
        stack, rank = CONFIGS[name]
        base = full if stack == "llmkit" else memory.get("hf-full", full)
        base_t = full_t if stack == "llmkit" else rows_t.get("hf-full", full_t)
        ours_t = rows_t[f"ours-lora{rank}"] if rank else full_t
        table.append(
            [
                name,
                f"{m['trainable_parameters']:,}",
                mib(m["model_bytes"]),
                mib(m["grad_and_adamw_bytes_expected"]),
                mib(m["saved_for_backward_bytes"]),
                mib(m["rss_model_loaded"]),
                mib(m["training_peak_above_model"]),
                mib(m["ru_maxrss"]),
                f"{m['ru_maxrss'] / base['ru_maxrss']:.2f}",
                f"{m['training_peak_above_model'] / base['training_peak_above_model']:.2f}",
                f"{t['step_s_median']:.2f}",
                f"{t['fwd_s_median']:.2f}",
                f"{t['bwd_s_median']:.2f}",
                f"{t['adamw_s_median']:.3f}",
                f"{base_t['step_s_median'] / t['step_s_median']:.2f}x",
                f"{t['step_s_median'] / ours_t['step_s_median']:.2f}x",
            ]
        )
    print_table(headers, table)
    print(
        "(memory columns: per-configuration processes; grad+AdamW = 12 bytes per trainable parameter; activations = tensors saved for "
        "backward in one forward, parameters excluded; '/ full' is against ours-full for llmkit rows, hf-full for HF/PEFT rows. "
        "Time columns: medians of the interleaved rounds; 'full / this' is the full fine-tuning step over this one (same stack); "
        "'this / ours' is this step over llmkit's step of the same rank)"
    )
    print()

    summary = []
    for r in RANKS:
        m = memory[f"ours-lora{r}"]
        ratio_abs = m["ru_maxrss"] / full["ru_maxrss"]
        ratio_train = m["training_peak_above_model"] / full["training_peak_above_model"]
        summary.append(
            f"LoRA r={r} peak memory / full fine-tuning (llmkit): peak RSS {ratio_abs:.2f} ({mib(m['ru_maxrss'])} / {mib(full['ru_maxrss'])} MiB); "
            f"goal <= {GOAL_MEMORY:.2f}: {verdict(ratio_abs, GOAL_MEMORY, higher_is_better=False)}. "
            f"Training memory above the loaded model: {ratio_train:.2f} ({mib(m['training_peak_above_model'])} / {mib(full['training_peak_above_model'])} MiB)"
        )
    for r in RANKS:
        t = rows_t[f"ours-lora{r}"]
        summary.append(f"step time full / LoRA r={r} (llmkit): {full_t['step_s_median'] / t['step_s_median']:.2f}x ({full_t['step_s_median']:.2f} s / {t['step_s_median']:.2f} s)")
    for r in RANKS:
        ours_t, peft_t = rows_t[f"ours-lora{r}"], rows_t[f"peft-lora{r}"]
        ratio = peft_t["step_s_median"] / ours_t["step_s_median"]
        summary.append(
            f"PEFT / llmkit LoRA r={r} step time: {ratio:.2f}x ({peft_t['step_s_median']:.2f} s / {ours_t['step_s_median']:.2f} s; "
            f"fwd {peft_t['fwd_s_median'] / ours_t['fwd_s_median']:.2f}x, bwd {peft_t['bwd_s_median'] / ours_t['bwd_s_median']:.2f}x, "
            f"best step {peft_t['step_s_min'] / ours_t['step_s_min']:.2f}x); goal >= {GOAL_PEFT:.1f}x: {verdict(ratio, GOAL_PEFT)}"
        )
    for r in RANKS:
        summary.append(f"trainable parameters, rank {r}: llmkit {counts[r]:,} == PEFT {counts[r]:,} (asserted; {counts[r] / full['parameters']:.2%} of {full['parameters']:,})")
    for key, c in checks.items():
        if isinstance(c, dict):
            summary.append(
                f"check {key}: first-step loss {c['first_loss_ours']:.6f} vs {c['first_loss_peer']:.6f}, |diff| {c['first_abs_diff']:.1e} (asserted <= 1e-4); "
                f"max |diff| over all {c['steps_compared']} steps {c['max_abs_diff_all_steps']:.1e}"
            )
    if "weights_ours_vs_export_max_abs_diff" in checks:
        summary.append(f"check: llmkit's seed-built weights equal the export loaded by transformers (max |diff| {checks['weights_ours_vs_export_max_abs_diff']:.1e})")
    for line in summary:
        print(line)
    for name, rows in timing["profile"].items():
        print()
        print_profile(f"{name} (one fwd+bwd+AdamW step)", rows)

    machine["loadavg_after_memory_phase"] = load_mid
    machine["loadavg_end"] = list(os.getloadavg())
    machine["wall_s"] = time.perf_counter() - t_start
    print()
    print(f"load average after the memory phase: {', '.join(f'{x:.2f}' for x in load_mid)}; at end: {', '.join(f'{x:.2f}' for x in machine['loadavg_end'])}; {machine['wall_s']:.0f} s in all")
    out = {
        "machine": machine,
        "threads": threads,
        "quick": args.quick,
        "workload": {
            "preset": PRESET,
            "batch": args.batch,
            "context": args.context,
            "dtype": "float32",
            "optimizer": {"name": "AdamW", "lr": LR, "betas": BETAS, "weight_decay": WEIGHT_DECAY},
            "lora": {"ranks": RANKS, "alpha": "2 r", "targets": TARGETS, "dropout": 0.0},
            "memory_steps": args.mem_steps,
            "warmup_rounds": args.warmup,
            "timed_rounds": args.steps,
            "malloc": malloc,
        },
        "goals": {"memory": f"LoRA peak <= {GOAL_MEMORY:.0%} of full fine-tuning", "peft": f"PEFT step time / ours >= {GOAL_PEFT}x"},
        "memory": memory,
        "time": timing,
        "summary": summary,
    }
    write_results(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
