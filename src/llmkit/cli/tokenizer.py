"""``llmkit tokenizer ...``: train, encode, decode, show, stats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from llmkit.cli._common import cli_errors, console, err_console, fail, progress_bar, read_text_arg

app = typer.Typer(help="Byte-level BPE tokenizers: train your own, use gpt2/cl100k_base/o200k_base offline.", no_args_is_help=True)

TokOpt = Annotated[str, typer.Option("--tokenizer", "-t", help="gpt2, r50k_base, cl100k_base, o200k_base, or a tokenizer directory")]
EngineOpt = Annotated[str, typer.Option("--engine", help="python (readable reference) or fast (default)")]
FileOpt = Annotated[Optional[str], typer.Option("--file", "-f", help="read the input from this file ('-' for stdin)")]


def _load(name: str, engine: str):
    from llmkit.tokenizer import Tokenizer

    if engine not in ("python", "fast"):
        fail(f"unknown engine {engine!r}; choose python or fast")
    return Tokenizer.from_pretrained(name, engine=engine)  # type: ignore[arg-type]


@app.command()
@cli_errors
def train(
    output: Annotated[Path, typer.Option("--output", "-o", help="directory to write the tokenizer to")],
    vocab_size: Annotated[int, typer.Option("--vocab-size", help="total ids: 256 bytes + merges + special tokens")],
    corpus: Annotated[str, typer.Option("--corpus", help="pydocs, pysource, A+B, or a file/directory path")] = "pydocs",
    pattern: Annotated[str, typer.Option("--pattern", help="split pattern: gpt2, gpt4 or o200k")] = "gpt4",
    special: Annotated[Optional[list[str]], typer.Option("--special", help="a special token (repeatable); default <|endoftext|>")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing tokenizer in OUTPUT")] = False,
) -> None:
    """Train a byte-level BPE tokenizer and save it (tiktoken + HF files)."""
    import time

    from llmkit.data.corpora import load_corpus
    from llmkit.tokenizer import Tokenizer, get_pattern
    from llmkit.tokenizer.tokenizer import HF_FILE, META_FILE, RANKS_FILE

    from llmkit._io import refuse_overwrite
    from llmkit.tokenizer.tokenizer import merges_for

    get_pattern(pattern)
    specials = special if special is not None else ["<|endoftext|>"]
    n_merges = merges_for(vocab_size, specials)
    refuse_overwrite([output / n for n in (RANKS_FILE, META_FILE, HF_FILE)], force)
    t0 = time.perf_counter()
    with console.status(f"reading corpus {corpus} ..."):
        docs = load_corpus(corpus)
    err_console.print(f"corpus {corpus}: {len(docs)} documents, {docs.nbytes / 1e6:.1f} MB")
    bar, update = progress_bar("merging", n_merges)
    with bar:
        tok = Tokenizer.train(docs.texts(), vocab_size, pattern=pattern, special_tokens=specials, progress=update)
    if tok.n_vocab < vocab_size:
        err_console.print(f"warning: the corpus ran out of pairs to merge; the vocabulary has {tok.n_vocab} ids, not {vocab_size}")
    tok.save(output, overwrite=force)
    console.print(f"saved {tok.n_vocab}-token tokenizer ({pattern} pattern) to {output} in {time.perf_counter() - t0:.1f} s")


@app.command()
@cli_errors
def encode(
    tokenizer: TokOpt,
    text: Annotated[Optional[str], typer.Argument(help="text to encode")] = None,
    file: FileOpt = None,
    engine: EngineOpt = "fast",
    allow_special: Annotated[bool, typer.Option("--allow-special", help="recognise special tokens such as <|endoftext|> in the text")] = False,
) -> None:
    """Print the token ids of TEXT as a JSON list."""
    s = read_text_arg(text, file)
    tok = _load(tokenizer, engine)
    typer.echo(json.dumps(tok.encode(s, allowed_special="all" if allow_special else ())))


def _parse_ids(raw: str) -> list[int]:
    raw = raw.strip()
    try:
        ids = json.loads(raw) if raw.startswith("[") else [int(x) for x in raw.replace(",", " ").split()]
    except ValueError:
        fail("ids must be a JSON list of integers or integers separated by spaces/commas")
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        fail("ids must be a JSON list of integers")
    return ids


@app.command()
@cli_errors
def decode(
    tokenizer: TokOpt,
    ids: Annotated[Optional[str], typer.Argument(help="ids: a JSON list or space/comma-separated integers")] = None,
    file: FileOpt = None,
    engine: EngineOpt = "fast",
) -> None:
    """Print the text of token IDS."""
    tok = _load(tokenizer, engine)
    typer.echo(tok.decode(_parse_ids(read_text_arg(ids, file, "IDS"))), nl=False)
    typer.echo()


@app.command()
@cli_errors
def show(
    tokenizer: TokOpt,
    text: Annotated[Optional[str], typer.Argument(help="text to show")] = None,
    file: FileOpt = None,
    engine: EngineOpt = "fast",
) -> None:
    """Show TEXT with token boundaries coloured, the tokens as a list, and their ids."""
    from llmkit.tokenizer.display import token_pieces

    from rich.text import Text

    s = read_text_arg(text, file)
    tok = _load(tokenizer, engine)
    ids = tok.encode(s)
    pieces = token_pieces(tok, ids)
    colours = ["on dark_blue", "on dark_green", "on dark_red", "on dark_magenta", "on dark_cyan", "on grey30"]
    line = Text()
    for i, p in enumerate(pieces):
        line.append(p, style=colours[i % len(colours)])
    console.print(line)
    console.print(repr(pieces), highlight=False, soft_wrap=True, markup=False)
    console.print(json.dumps(ids), highlight=False, soft_wrap=True)
    console.print(f"{len(ids)} tokens, {len(s.encode('utf-8'))} bytes", style="dim")


@app.command()
@cli_errors
def stats(
    corpus: Annotated[str, typer.Option("--corpus", help="pydocs, pysource, A+B, or a file/directory path")] = "pydocs",
    tokenizer: Annotated[Optional[list[str]], typer.Option("--tokenizer", "-t", help="a tokenizer to measure (repeatable)")] = None,
    max_mb: Annotated[float, typer.Option("--max-mb", help="measure on at most this many MB of the corpus (whole documents)")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Bytes/token and tokens/word of your tokenizers beside gpt2, cl100k_base and o200k_base."""
    from rich.table import Table

    from llmkit.data.corpora import load_corpus
    from llmkit.tokenizer.stats import COMPARE_WITH, compare

    if max_mb < 0:
        fail("--max-mb must be >= 0 (0 means the whole corpus)")
    docs = load_corpus(corpus)
    if max_mb > 0:
        docs = docs.head(int(max_mb * 1e6))
    rows = compare([*(tokenizer or []), *COMPARE_WITH], docs.texts())
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    table = Table(title=f"{docs.name}: {docs.nbytes / 1e6:.2f} MB, {len(docs)} documents")
    for col in ("tokenizer", "vocab", "tokens", "bytes/token", "tokens/word"):
        table.add_column(col, justify="left" if col == "tokenizer" else "right")
    for r in rows:
        table.add_row(r.tokenizer, f"{r.n_vocab:,}", f"{r.n_tokens:,}", f"{r.bytes_per_token:.3f}", f"{r.tokens_per_word:.3f}")
    console.print(table)
