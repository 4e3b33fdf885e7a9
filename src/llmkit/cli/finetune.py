"""``llmkit finetune ...``: classification heads and instruction/chat tuning."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Fine-tune a pre-trained model: classification heads, LoRA, chat tuning.")

from llmkit.cli import classify as classify_cli  # noqa: E402
from llmkit.cli import sft as sft_cli  # noqa: E402

app.command("classify")(classify_cli.finetune_classify)
app.command("sft")(sft_cli.sft)
