"""Entry point of the ``llmkit`` command. Heavy libraries (torch, transformers, peft,
sentence-transformers) are imported inside the commands that need them, so ``llmkit --help``
and ``llmkit tokenizer encode`` start fast."""

from __future__ import annotations

import typer

from llmkit.cli import agent as agent_cli
from llmkit.cli import compare as compare_cli
from llmkit.cli import edge as edge_cli
from llmkit.cli import finetune as finetune_cli
from llmkit.cli import generate as generate_cli
from llmkit.cli import hf as hf_cli
from llmkit.cli import memory as memory_cli
from llmkit.cli import pipeline as pipeline_cli
from llmkit.cli import rag as rag_cli
from llmkit.cli import serve as serve_cli
from llmkit.cli import speedrun as speedrun_cli
from llmkit.cli import tokenizer as tokenizer_cli
from llmkit.cli import train as train_cli

app = typer.Typer(
    name="llmkit",
    help="llmkit: a practical LLM toolkit, from raw text to trained, fine-tuned, served models. Offline first.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(tokenizer_cli.app, name="tokenizer")
app.add_typer(finetune_cli.app, name="finetune")
app.add_typer(hf_cli.app, name="hf")
app.add_typer(rag_cli.app, name="rag")
app.command("speedrun")(speedrun_cli.speedrun)
app.command("train")(train_cli.train)
app.command("generate")(generate_cli.generate)
app.command("chat")(generate_cli.chat)
app.command("attention")(generate_cli.attention)
app.command("compare")(compare_cli.compare)
app.command("classify")(finetune_cli.classify_cli.classify)
app.command("memory")(memory_cli.memory)
app.command("pipeline")(pipeline_cli.pipeline)
app.command("quantize")(edge_cli.quantize)
app.command("serve")(serve_cli.serve)
app.command("agent")(agent_cli.agent)
hf_cli.app.command("gguf")(edge_cli.gguf)


@app.callback()
def _root() -> None:
    """llmkit: the whole LLM course as tested, offline-first software."""


if __name__ == "__main__":  # pragma: no cover
    app()
