"""GPU training throughput and MFU of llmkit's GPT (helper of ``benchmarks/gpu_train.sh``).

Synthetic random tokens, ``torch.autocast`` bfloat16, optionally ``torch.compile``, fused
AdamW. A few untimed warm-up steps (they include compilation), then ``--steps`` timed steps;
tokens/s is batch x sequence / median step time, and

    MFU = tokens/s x FLOPs per token / peak,   FLOPs per token = 6 N + 12 L d T

(N: parameters without the position embeddings, L layers, d width, T sequence length; the
PaLM appendix B / nanoGPT estimate). Peak: 989e12 FLOP/s, the dense bf16 peak of an H100 or
H200 SXM; pass ``--peak`` for another card. ``--model hf`` runs ``transformers.GPT2LMHeadModel``
with the same configuration instead, for a side-by-side.

    python benchmarks/gpu_train.py                                   # cuda, gpt2-124m, 16 x 1024, compiled
    python benchmarks/gpu_train.py --device cpu --steps 2 --preset tiny   # CPU smoke test of the code path

Prints one JSON object on the last line of stdout (and writes it with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_gpt import copy_into_hf, machine_info  # noqa: E402

H100_H200_BF16_DENSE = 989e12


def flops_per_token(n_params_no_wpe: int, n_layer: int, n_embd: int, seq: int) -> float:
    return 6 * n_params_no_wpe + 12 * n_layer * n_embd * seq


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (smoke test)")
    ap.add_argument("--preset", default="gpt2-124m", help="llmkit GPT preset (default gpt2-124m)")
    ap.add_argument("--vocab", type=int, default=50304, help="vocabulary (default 50304: GPT-2's 50257 padded to a multiple of 64)")
    ap.add_argument("--batch", type=int, default=None, help="sequences per step (default 16 on cuda, 2 on cpu)")
    ap.add_argument("--seq", type=int, default=None, help="tokens per sequence (default: the preset's context length)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5 on cuda, 1 on cpu)")
    ap.add_argument("--compile", choices=("auto", "on", "off"), default="auto", help="torch.compile the model (auto: on for cuda, off for cpu)")
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16", help="autocast dtype (default bf16)")
    ap.add_argument("--model", choices=("llmkit", "hf"), default="llmkit", help="which implementation (default llmkit)")
    ap.add_argument("--loss", choices=("model", "torch"), default="model", help="llmkit only: the model's own per-token loss (default) or F.cross_entropy on its logits")
    ap.add_argument("--peak", type=float, default=None, help="peak FLOP/s for MFU (default 989e12 on H100/H200, else no MFU)")
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON here (atomically)")
    args = ap.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from llmkit._io import atomic_write_text
    from llmkit.models.config import gpt_preset
    from llmkit.models.gpt import GPT

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu for a smoke test", file=sys.stderr)
        return 2
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.set_num_threads(os.cpu_count() or 1)
    batch = args.batch or (16 if cuda else 2)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    use_compile = args.compile == "on" or (args.compile == "auto" and cuda)
    cfg = gpt_preset(args.preset, vocab_size=args.vocab)
    seq = args.seq or cfg.context_length
    if seq > cfg.context_length:
        ap.error(f"--seq {seq} is longer than the preset's context length {cfg.context_length}")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32

    torch.manual_seed(0)
    ours = GPT(cfg)
    n_params = ours.num_parameters()
    n_no_wpe = ours.num_parameters(exclude_position_embeddings=True)
    if args.model == "hf":
        model = copy_into_hf(ours)
        del ours

        def loss_of(m, x, y):
            return F.cross_entropy(m(x).logits.flatten(0, 1).float(), y.flatten())

    elif args.loss == "torch":
        model = ours

        def loss_of(m, x, y):
            return F.cross_entropy(m(x)[0].flatten(0, 1), y.flatten())  # autocast runs it in float32

    else:
        model = ours

        def loss_of(m, x, y):
            return m(x, y)[1].mean()

    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=cuda)
    fwd = torch.compile(model) if use_compile else model

    g = torch.Generator(device="cpu").manual_seed(1)
    data = torch.randint(0, cfg.vocab_size, (batch, seq + 1), generator=g).to(device)
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    tokens = batch * seq

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = loss_of(fwd, x, y)
        loss.backward()
        opt.step()
        return loss

    t_start = time.perf_counter()
    for _ in range(warmup):
        step()
    sync()
    warmup_s = time.perf_counter() - t_start
    times, losses = [], []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss = step()
        sync()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())  # after the timer: no extra sync inside it

    med = statistics.median(times)
    tps = tokens / med
    fpt = flops_per_token(n_no_wpe, cfg.n_layer, cfg.n_embd, seq)
    gpu = torch.cuda.get_device_name(device) if cuda else None
    peak = args.peak
    if peak is None and gpu and any(k in gpu for k in ("H100", "H200")):
        peak = H100_H200_BF16_DENSE
    out = {
        "machine": machine_info(),
        "device": gpu or "cpu",
        "torch": torch.__version__,
        "model": args.model,
        "preset": args.preset,
        "config": {"n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd, "vocab": cfg.vocab_size},
        "parameters": n_params,
        "parameters_no_wpe": n_no_wpe,
        "batch": batch,
        "seq": seq,
        "tokens_per_step": tokens,
        "dtype": args.dtype,
        "compile": use_compile,
        "loss": args.loss,
        "warmup_steps": warmup,
        "warmup_s": warmup_s,
        "timed_steps": args.steps,
        "step_s_median": med,
        "step_s_min": min(times),
        "step_s_all": times,
        "tokens_per_s": tps,
        "flops_per_token": fpt,
        "achieved_flops": tps * fpt,
        "peak_flops": peak,
        "mfu": tps * fpt / peak if peak else None,
        "loss_first_last": [losses[0], losses[-1]] if losses else None,
        "max_memory_gb": torch.cuda.max_memory_allocated(device) / 1e9 if cuda else None,
    }
    mfu = f"{100 * out['mfu']:.1f}%" if out["mfu"] is not None else "n/a (no peak for this device; pass --peak)"
    print(
        f"{args.model} {args.preset} on {out['device']}: {args.dtype}, compile={use_compile}, batch {batch} x {seq}: "
        f"{1e3 * med:.1f} ms/step, {tps:,.0f} tokens/s, {tps * fpt / 1e12:.1f} TFLOP/s, MFU {mfu}",
        file=sys.stderr,
    )
    text = json.dumps(out)
    if args.json:
        atomic_write_text(args.json, json.dumps(out, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
