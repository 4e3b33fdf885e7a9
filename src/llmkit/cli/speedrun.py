"""``llmkit speedrun``: the main job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from llmkit.cli._common import cli_errors, console, progress_bar


@cli_errors
def speedrun(
    quick: Annotated[bool, typer.Option("--quick", help="a ~2-minute version of every stage")] = False,
    out: Annotated[Path, typer.Option("--out", help="run directory")] = Path("runs/speedrun"),
    corpus: Annotated[str, typer.Option("--corpus", help="pydocs, pysource, A+B, or a path")] = "pydocs",
    vocab_size: Annotated[int, typer.Option("--vocab-size", help="tokenizer vocabulary (full run)")] = 8192,
    restart: Annotated[bool, typer.Option("--restart", help="redo every stage instead of resuming")] = False,
    stage: Annotated[Optional[list[str]], typer.Option("--stage", help="run only this stage (repeatable)")] = None,
) -> None:
    """Run the whole course end to end on the embedded data: writes OUT/report.md and figures."""
    from llmkit.speedrun import SpeedrunConfig, run_speedrun

    cfg = SpeedrunConfig(out_dir=out, quick=quick, corpus=corpus, vocab_size=vocab_size)
    report = run_speedrun(cfg, log=lambda m: console.print(m, highlight=False, markup=False), progress=progress_bar, restart=restart, only=stage)
    console.print(f"report: {report}")
    model = out / "pretrain"
    if (model / "model" / "config.json").is_file():  # the model it trained, served over the OpenAI API
        console.print(f"serve the model it trained: llmkit serve {model}", highlight=False, soft_wrap=True)
        console.print("then, in another shell: curl http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' "
                      "-d '{\"model\": \"pretrain\", \"prompt\": \"The json module\", \"max_tokens\": 30}'",
                      highlight=False, soft_wrap=True, markup=False)
