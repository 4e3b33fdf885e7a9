"""``llmkit memory``: how much memory a model needs to run, and to train (full or LoRA)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from llmkit.cli._common import cli_errors, console, fail


def _dtypes(given: list[str] | None) -> list[str]:
    from llmkit.hf.memory import DTYPE_BYTES, normalize_dtype

    if not given or "all" in given:
        return list(DTYPE_BYTES)
    return [normalize_dtype(d) for d in given]


def _print_inference(n: int, dtypes: list[str]) -> None:
    from rich.table import Table

    from llmkit.hf.memory import dtype_bytes, inference_memory

    table = Table(title=f"weights of {n:,} parameters", caption="GB = 10^9 bytes (the course's), GiB = 2^30 bytes")
    for col in ("dtype", "bytes/param", "GB", "GiB"):
        table.add_column(col, justify="right" if col != "dtype" else "left")
    for d in dtypes:
        b = inference_memory(n, d)
        table.add_row(d, f"{dtype_bytes(d):g}", f"{b / 1e9:,.2f}", f"{b / 2**30:,.2f}")
    console.print(table)


def _print_training(n: int, shape, dtypes: list[str], lora_rank: int | None, targets: list[str] | None, batch: int, seq: int) -> None:
    from rich import box
    from rich.table import Table

    from llmkit.hf.memory import DTYPE_BYTES, training_memory

    lora = shape.lora_parameters(lora_rank, targets) if (lora_rank and shape is not None) else None
    dims = {} if shape is None else dict(n_layer=shape.n_layer, d_model=shape.d_model, n_head=shape.n_head, vocab=shape.vocab)
    table = Table(title=f"training with AdamW, batch {batch} x {seq} tokens, in GB (10^9 bytes)", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in ("dtype", "method", "weights", "grads", "AdamW", "master", "activ.", "total GB", "total GiB"):
        table.add_column(col, justify="left" if col in ("dtype", "method") else "right")
    for d in dtypes:
        for lp in ([None] if DTYPE_BYTES[d] >= 2 else []) + ([lora] if lora is not None else []):
            m = training_memory(n, dtype=d, lora_params=lp, batch=batch, seq=seq, **dims)
            cells = [f"{v / 1e9:,.2f}" for v in (*m.parts().values(), m.total)]
            table.add_row(d, "full" if lp is None else f"LoRA r{lora_rank}", *cells, f"{m.total / 2**30:,.2f}")
    console.print(table)
    console.print("master = fp32 copy of 16-bit trainable weights; activ. = activations + logits (Korthikanti et al. 2022)")
    console.print(f"trainable parameters: full {n:,}" + (f", LoRA r{lora_rank} {lora:,}" if lora is not None else ""))
    if shape is None:
        console.print("activations need the architecture: give --config (LoRA too)")


def _print_kv_cache(n: int, shape, dtypes: list[str], batch: int, context: int) -> None:
    from rich.table import Table

    from llmkit.hf.memory import inference_memory

    kv_heads, head_dim = shape.n_kv_head or shape.n_head, shape.head_dim or shape.d_model // max(1, shape.n_head)
    table = Table(title=f"generating: weights + KV cache for {batch} x {context} tokens, in GB (10^9 bytes)")
    for col in ("dtype", "weights", "KV cache", "total GB", "total GiB"):
        table.add_column(col, justify="right" if col != "dtype" else "left")
    for d in dtypes:
        w, kv = inference_memory(n, d), shape.kv_cache(batch=batch, seq=context, dtype=d)
        table.add_row(d, f"{w / 1e9:,.3f}", f"{kv / 1e9:,.3f}", f"{(w + kv) / 1e9:,.3f}", f"{(w + kv) / 2**30:,.3f}")
    console.print(table)
    sliding = f"; {shape.sliding_layers} sliding-window layers keep at most {shape.sliding_window - 1} tokens" if shape.sliding_layers and shape.sliding_window else ""
    console.print(f"KV cache = 2 (key, value) x {shape.n_layer} layers x {kv_heads} KV heads x {head_dim} per head x tokens, "
                  f"in the compute dtype (fp32 4 bytes, else 2){sliding}")


@cli_errors
def memory(
    size: Annotated[Optional[str], typer.Argument(help="parameter count: 3B, 124M, 1.5b, 7e9")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="config.json (or its directory) to count parameters from, without weights")] = None,
    dtype: Annotated[Optional[list[str]], typer.Option("--dtype", help="fp32, fp16, bf16, int8, int4 or all (repeatable)")] = None,
    train: Annotated[bool, typer.Option("--train", help="also estimate training memory (weights, gradients, AdamW, activations)")] = False,
    lora_rank: Annotated[Optional[int], typer.Option("--lora-rank", help="compare with LoRA of this rank on every linear layer but the head")] = None,
    lora_target: Annotated[Optional[list[str]], typer.Option("--lora-target", help="adapt only layers whose names end in this (repeatable)")] = None,
    batch: Annotated[int, typer.Option("--batch", help="sequences per step (training)")] = 8,
    seq: Annotated[int, typer.Option("--seq", help="tokens per sequence (training)")] = 1024,
    context: Annotated[Optional[int], typer.Option("--context", help="also count generation's KV cache for --batch sequences of N tokens (needs --config)")] = None,
) -> None:
    """Memory of a model: its weights per dtype and, with --train, full fine-tuning vs LoRA.

    Give SIZE (e.g. 3B: 12 GB in fp32, 1.5 GB in int4, the course's numbers) or --config."""
    from llmkit.hf.memory import model_shape, parse_size

    if (size is None) == (config is None):
        fail("give either SIZE (e.g. 3B) or --config, not both and not neither")
    if lora_rank is not None and lora_rank < 1:
        fail("--lora-rank must be >= 1")
    if batch < 1 or seq < 1:
        fail("--batch and --seq must be >= 1")
    if context is not None and (context < 1 or config is None):
        fail("--context needs --config (the KV cache depends on layers, heads and head width) and must be >= 1")
    dtypes = _dtypes(dtype)
    shape = model_shape(config) if config is not None else None
    n = shape.n_params if shape is not None else parse_size(size)
    if shape is not None:
        console.print(f"{config}: {shape.source}, {n:,} parameters, {shape.n_layer} layers, width {shape.d_model}, vocabulary {shape.vocab:,}")
    _print_inference(n, dtypes)
    if context is not None:
        _print_kv_cache(n, shape, dtypes, batch, context)
    if train:
        _print_training(n, shape, dtypes, lora_rank, lora_target, batch, seq)
