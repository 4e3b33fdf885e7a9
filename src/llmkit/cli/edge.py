"""``llmkit edge quantize`` and ``llmkit edge gguf``: make a trained GPT small for the edge.

Two command functions; the app registers them (``app.command("quantize")(quantize)`` ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from llmkit.cli._common import cli_errors, console, fail

RunArg = Annotated[Path, typer.Argument(help="a run directory (with model/ and tokens/) or a model directory")]


@cli_errors
def quantize(
    run: RunArg,
    batches: Annotated[int, typer.Option("--batches", help="evaluation batches (4 windows each)")] = 4,
    block: Annotated[int, typer.Option("--block", help="tokens per window")] = 128,
    tokens: Annotated[Optional[Path], typer.Option("--tokens", help="token directory (default: RUN/tokens)")] = None,
) -> None:
    """Int8 dynamic quantization: size, CPU tokens/s and perplexity before and after.

    The linear layers are quantized; both models are scored on the same validation windows."""
    from rich.table import Table

    from llmkit.data.tokens import load_token_files
    from llmkit.hf.quantize import compare_quantized
    from llmkit.inference import load_pretrained

    tok_dir = tokens if tokens is not None else run / "tokens"
    if not tok_dir.is_dir():
        fail(f"{tok_dir} is not a token directory; pass --tokens DIR (a run's tokens/)")
    model, _, kind = load_pretrained(run)
    if kind == "bert":
        fail("this is a BERT encoder; perplexity here means next-token prediction (gpt and baselines)")
    val = load_token_files(tok_dir).split("val")
    rows = compare_quantized(model, val, block=block, batches=batches)
    table = Table(title=f"int8 dynamic quantization ({batches} x 4 windows of {block} tokens, CPU)")
    for col in ("", "fp32", "int8", "int8 / fp32"):
        table.add_column(col, justify="left" if not col else "right")
    for r in rows:
        table.add_row(r["metric"], f"{r['fp32']:,.2f}", f"{r['int8']:,.2f}", f"{r['ratio']:.3f}x")
    console.print(table)


@cli_errors
def gguf(
    run: RunArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="the .gguf file to write")],
    dtype: Annotated[str, typer.Option("--dtype", help="f32, or f16 for the matrices (1-D tensors stay f32)")] = "f32",
    force: Annotated[bool, typer.Option("--force", help="replace an existing file")] = False,
) -> None:
    """Export a GPT with its tokenizer as a GGUF file (llama.cpp's gpt2 architecture)."""
    from llmkit.hf.gguf_export import export_gguf

    path = export_gguf(run, output, dtype=dtype, overwrite=force)
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {dtype})", highlight=False)
