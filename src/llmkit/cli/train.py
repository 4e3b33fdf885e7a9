"""``llmkit train``: pre-train a model from scratch on a corpus."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from llmkit.cli._common import cli_errors, console, err_console, fail


def _progress_printer():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=err_console)
    task = bar.add_task("train", total=None, info="")

    def update(done: int, total: int, rec: dict) -> None:
        info = f"loss {rec['loss']:.3f}"
        if "val_loss" in rec:
            info += f" | val {rec['val_loss']:.3f} ({rec['val_bits_per_token']:.2f} bits/token)"
        if "tokens_per_s" in rec:
            info += f" | {rec['tokens_per_s']:,.0f} tok/s"
        bar.update(task, completed=done, total=total, info=info)

    return bar, update


@cli_errors
def train(
    output: Annotated[Path, typer.Option("--output", "-o", help="run directory")],
    model: Annotated[str, typer.Option("--model", help="gpt, bert, lstm, nplm or ngram")] = "gpt",
    preset: Annotated[str, typer.Option("--preset", help="model size preset, e.g. tiny, small, gpt2-124m")] = "tiny",
    corpus: Annotated[str, typer.Option("--corpus", help="pydocs, pysource, A+B, or a path")] = "pydocs",
    tokenizer: Annotated[str, typer.Option("--tokenizer", "-t", help="a tokenizer directory or gpt2/cl100k_base/o200k_base")] = "gpt2",
    steps: Annotated[Optional[int], typer.Option("--steps", help="optimizer steps")] = None,
    tokens: Annotated[Optional[int], typer.Option("--tokens", help="train on about this many tokens instead of --steps")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="sequences per step (all processes)")] = 8,
    grad_accum: Annotated[int, typer.Option("--grad-accum")] = 1,
    block_size: Annotated[Optional[int], typer.Option("--block-size", help="tokens per sequence (default: the context length)")] = None,
    stride: Annotated[Optional[int], typer.Option("--stride", help="window stride (default: block size)")] = None,
    lr: Annotated[float, typer.Option("--lr")] = 1e-3,
    warmup: Annotated[int, typer.Option("--warmup", help="warm-up steps")] = 20,
    eval_every: Annotated[int, typer.Option("--eval-every")] = 50,
    log_every: Annotated[int, typer.Option("--log-every")] = 10,
    ckpt_every: Annotated[int, typer.Option("--ckpt-every")] = 50,
    seed: Annotated[int, typer.Option("--seed")] = 1337,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, mps")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto (bf16 on GPU), float32, bfloat16")] = "auto",
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="continue OUTPUT from its latest checkpoint")] = False,
    force: Annotated[bool, typer.Option("--force", help="start OUTPUT over if it holds a run")] = False,
    nproc: Annotated[int, typer.Option("--nproc", help="processes (DDP through torchrun)")] = 1,
    prepared: Annotated[bool, typer.Option("--prepared", hidden=True, help="internal: the run is prepared (torchrun workers)")] = False,
) -> None:
    """Pre-train a language model from scratch; the result lands in OUTPUT/model."""
    from llmkit.models.zoo import build_model
    from llmkit.training.loop import TrainConfig
    from llmkit.training.run import RunSpec, load_spec, prepare_run, steps_for_tokens, train_run

    if steps is not None and tokens is not None:
        fail("give --steps or --tokens, not both")
    if tokens is not None and tokens < 1:
        fail("--tokens must be >= 1")
    if nproc < 1:
        fail("--nproc must be >= 1")
    if resume and not prepared and (steps is not None or tokens is not None):
        fail("--resume continues the run as it was planned; --steps/--tokens cannot change it")
    if prepared:
        train_run(output, resume=resume, log=lambda m: err_console.print(m, highlight=False))
        return
    if resume:
        load_spec(output)  # fails clearly when OUTPUT is not a run
    else:
        from llmkit.training.loop import default_block_size

        probe = build_model(model, preset, vocab_size=2)
        block = block_size if block_size is not None else default_block_size(probe)
        ctx_len = getattr(probe.config, "context_length", None)
        if ctx_len is not None and block > ctx_len:
            fail(f"--block-size {block} is longer than the {preset} {model}'s context length {ctx_len}")
        _check_output(output, force)
        base = TrainConfig(batch_size=batch_size, grad_accum=grad_accum)
        n_steps = steps if steps is not None else (steps_for_tokens(tokens, base, block) if tokens else 200)
        cfg = TrainConfig(
            steps=n_steps, batch_size=batch_size, grad_accum=grad_accum, block_size=block_size, stride=stride, lr=lr,
            min_lr=lr / 10, warmup_steps=min(warmup, n_steps), eval_every=eval_every, log_every=log_every,
            ckpt_every=ckpt_every, seed=seed, device=device, dtype=dtype, compile=compile,
        )
        spec = RunSpec(model=model, preset=preset, corpus=corpus, tokenizer=tokenizer, train=cfg)
        if int(os.environ.get("RANK", "0")) == 0:
            prepare_run(spec, output, force=force, log=lambda m: err_console.print(m, highlight=False))
    from llmkit.models.zoo import COUNTED_KINDS
    from llmkit.training.run import load_spec as _spec

    if nproc > 1 and _spec(output).model not in COUNTED_KINDS:  # counting needs one process
        _launch_torchrun(output, nproc, resume)
        _print_summary(output)
        return
    if _spec(output).model in COUNTED_KINDS:
        rec = train_run(output, log=lambda m: err_console.print(m, highlight=False))[-1]
        console.print(f"validation {rec.get('val_loss', float('nan')):.3f} nats ({rec.get('val_bits_per_token', float('nan')):.3f} bits/token, perplexity {rec.get('val_ppl', float('nan')):.1f})", highlight=False)
        return
    bar, update = _progress_printer()
    with bar:
        records = train_run(output, resume=resume, log=lambda m: err_console.print(m, highlight=False), progress=update)
    _print_summary(output, records)


def _print_summary(output: Path, records: list[dict] | None = None) -> None:
    import json

    if records is None:
        lines = (output / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        records = [json.loads(ln) for ln in lines if ln.strip()]
    last = records[-1] if records else {}
    msg = f"trained {last.get('step', 0)} steps; final loss {last.get('loss', float('nan')):.3f}"
    if "val_loss" in last:
        msg += f", validation {last['val_loss']:.3f} nats ({last['val_bits_per_token']:.3f} bits/token, perplexity {last['val_ppl']:.1f})"
    console.print(msg, highlight=False)
    console.print(f"model: {output / 'model'}  metrics: {output / 'metrics.jsonl'}  curve: {output / 'loss.png'}")


def _check_output(output: Path, force: bool) -> None:
    """A new run goes into a new or empty directory; an existing run needs --resume/--force;
    any other non-empty directory is never written into."""
    from llmkit.training.run import RUN_FILE

    if output.exists() and not output.is_dir():
        fail(f"{output} exists and is not a directory")
    if output.is_dir() and any(output.iterdir()) and not (output / RUN_FILE).exists():
        fail(f"{output} is not empty and holds no llmkit run; choose a new directory")
    if (output / RUN_FILE).exists() and not force:
        fail(f"{output} already holds a run; use --resume to continue it or --force to start over")


def _launch_torchrun(output: Path, nproc: int, resume: bool) -> None:
    """Run the prepared run under torchrun with ``nproc`` processes (gloo on CPU)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "llmkit.cli.main", "train", "-o", str(output), "--prepared"] + (["--resume"] if resume else [])
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    code = subprocess.call(cmd, env=env)
    if code:
        fail(f"torchrun exited with status {code} (see the messages above)")
