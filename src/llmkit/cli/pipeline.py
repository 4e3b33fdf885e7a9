"""``llmkit pipeline TASK``: run a Hugging Face pipeline over texts, print JSON lines."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

from llmkit.cli._common import cli_errors


@cli_errors
def pipeline(
    task: Annotated[str, typer.Argument(help="text-classification (sentiment, topic), token-classification (ner), question-answering (qa), text-generation, text2text-generation (summarization, translation), fill-mask, feature-extraction")],
    texts: Annotated[Optional[list[str]], typer.Argument(help="inputs; a {...} argument is a JSON object (QA: {\"question\": ..., \"context\": ...})")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="a transformers model directory (llmkit hf export) or a hub id")] = ...,  # type: ignore[assignment]
    file: Annotated[Optional[str], typer.Option("--file", "-f", help="one input per line, text or JSONL; - reads standard input")] = None,
    device: Annotated[str, typer.Option("--device", help="auto (cuda, then mps, then cpu), cpu, cuda[:N] or mps")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto (the checkpoint's own), float32, float16 or bfloat16")] = "auto",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n", help="generation: tokens to generate at most (greedy)")] = 50,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="classification / fill-mask: how many labels or tokens to list")] = None,
    aggregation: Annotated[str, typer.Option("--aggregation", help="token classification: simple, first, average, max or none")] = "simple",
    token_matrix: Annotated[bool, typer.Option("--token-embeddings", help="feature extraction: also print every token's vector")] = False,
) -> None:
    """Run TASK with --model on each input and print one JSON object per line.

    Inputs come from the arguments, or --file (one per line; - reads stdin); with neither, piped standard input is read."""
    from llmkit.hf.pipelines import read_inputs, run_pipeline

    if not texts and file is None and not sys.stdin.isatty():
        file = "-"
    inputs = read_inputs(texts, file)
    options = {"top_k": top_k, "max_new_tokens": max_new_tokens, "aggregation": aggregation, "token_matrix": token_matrix}
    for row in run_pipeline(task, model, inputs, device=device, dtype=dtype, **options):
        sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
        sys.stdout.flush()
