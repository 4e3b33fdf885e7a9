"""``llmkit compare``: n-gram, NPLM, LSTM and GPT on the same tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from llmkit.cli._common import cli_errors, console, err_console


@cli_errors
def compare(
    corpus: Annotated[str, typer.Option("--corpus", help="pydocs, pysource, A+B, or a path")] = "pydocs",
    tokenizer: Annotated[str, typer.Option("--tokenizer", "-t", help="tokenizer directory or gpt2/cl100k_base/o200k_base")] = "gpt2",
    budget: Annotated[str, typer.Option("--budget", help="training tokens per neural model: 200000, 200k, 1.5M")] = "200k",
    preset: Annotated[str, typer.Option("--preset", help="size preset for every model")] = "tiny",
    models: Annotated[Optional[list[str]], typer.Option("--model", help="models to compare (repeatable); default all four")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="directory for tokens, compare.json and compare.png")] = Path("runs/compare"),
    block_size: Annotated[int, typer.Option("--block-size")] = 64,
    force: Annotated[bool, typer.Option("--force", help="replace the results of an earlier comparison in OUTPUT")] = False,
) -> None:
    """Train the course's model ladder on the same tokens and print a comparison table."""
    from rich.table import Table

    from llmkit.data.corpora import load_corpus
    from llmkit.data.tokens import write_token_files
    from llmkit.tokenizer import Tokenizer
    from llmkit.training.compare import LADDER, compare_models, parse_budget

    tokens = parse_budget(budget)
    if block_size < 1:
        raise ValueError("--block-size must be >= 1")
    if (output / "run.json").exists():
        raise FileExistsError(f"{output} is a training run; compare writes its own directory, choose another --output")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        if not (force and (output / "compare.json").exists()):
            raise FileExistsError(f"{output} exists and is not empty; pass --force to replace an earlier comparison there, or choose a new --output")
    kinds = tuple(models or LADDER)
    for k in kinds:
        if k not in LADDER:
            raise ValueError(f"unknown model {k!r}; choose from {', '.join(LADDER)}")
    tok = Tokenizer.from_pretrained(tokenizer)
    docs = load_corpus(corpus)
    write_token_files(docs.texts(), tok, output / "tokens", corpus_name=docs.name, tokenizer_ref=tokenizer, overwrite=True)
    rows = compare_models(output / "tokens", output, budget_tokens=tokens, kinds=kinds, preset=preset, block_size=block_size,
                          log=lambda m: err_console.print(m, highlight=False))
    table = Table(title=f"{docs.name}, tokenizer {tokenizer}, {tokens:,} training tokens per neural model")
    for col in ("model", "parameters", "train s", "val loss", "bits/token", "perplexity"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(r.model, f"{r.parameters:,}", f"{r.train_seconds:.1f}", f"{r.val_loss:.3f}", f"{r.val_bits_per_token:.3f}", f"{r.val_ppl:,.1f}")
    console.print(table)
    console.print(f"figure: {output / 'compare.png'}  data: {output / 'compare.json'}")
