"""``llmkit hf ...``: move models between llmkit and Hugging Face transformers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from llmkit.cli._common import cli_errors, console

app = typer.Typer(help="Export llmkit models to transformers directories; import GPT-2 checkpoints.", no_args_is_help=True)

Force = Annotated[bool, typer.Option("--force", help="replace an existing, non-empty OUTPUT directory")]


@app.command("export")
@cli_errors
def export_cmd(
    run: Annotated[Path, typer.Argument(help="a run directory (llmkit train/sft -o RUN) or a model directory")],
    output: Annotated[Path, typer.Option("--output", "-o", help="directory to write the transformers model to")],
    force: Force = False,
) -> None:
    """Write RUN's model and tokenizer as a transformers directory (Auto* classes load it).

    A GPT becomes GPT2LMHeadModel, a BERT BertForMaskedLM."""
    from llmkit.hf.convert import export_model

    out = export_model(run, output, overwrite=force)
    console.print(f"wrote {out} (load it with transformers' from_pretrained)", highlight=False)


@app.command("import")
@cli_errors
def import_cmd(
    checkpoint: Annotated[str, typer.Argument(metavar="HF_DIR", help="a GPT-2 checkpoint directory (config.json + model.safetensors) or a hub id")],
    output: Annotated[Path, typer.Option("--output", "-o", help="llmkit model directory to write")],
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="tokenizer directory or named encoding, when the checkpoint has none llmkit reads")] = None,
    force: Force = False,
) -> None:
    """Import a transformers GPT-2 checkpoint as an llmkit model directory (for llmkit generate, chat, sft...)."""
    from llmkit.hf.convert import import_gpt2

    out = import_gpt2(checkpoint, output, tokenizer=tokenizer, overwrite=force)
    console.print(f"wrote {out} (try: llmkit generate {out} 'Hello')", highlight=False)
