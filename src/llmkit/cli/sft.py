"""``llmkit finetune sft``: chat-tune a pre-trained GPT; and the chat loop ``llmkit chat``
uses for chat-tuned runs (template, history, calculator tool calls)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Optional

import typer

from llmkit.cli._common import cli_errors, console, err_console, fail


@cli_errors
def sft(
    base: Annotated[Optional[Path], typer.Argument(help="the pre-trained run (llmkit train -o RUN) or model directory")] = None,
    data: Annotated[str, typer.Option("--data", help="JSONL conversations, 'default' for llmkit's generated chat set, or 'tools' for the tool-use set (calculator + rag_search)")] = "default",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="run directory to write")] = None,
    steps: Annotated[int, typer.Option("--steps", help="optimizer steps")] = 300,
    batch_size: Annotated[int, typer.Option("--batch-size", help="conversations per step")] = 16,
    lr: Annotated[float, typer.Option("--lr", help="peak learning rate")] = 3e-4,
    max_len: Annotated[Optional[int], typer.Option("--max-len", help="tokens per conversation (default: the context length)")] = None,
    seed: Annotated[int, typer.Option("--seed", help="seed of the generated data, the split and training")] = 0,
    n_arith: Annotated[int, typer.Option("--n-arith", help="generated calculator word problems")] = 2000,
    n_qa: Annotated[int, typer.Option("--n-qa", help="generated questions about stdlib functions")] = 1000,
    n_large: Annotated[int, typer.Option("--n-large", help="--data tools: extra word problems with 3-4 digit operands")] = 3000,
    n_rag: Annotated[int, typer.Option("--n-rag", help="--data tools: rag_search conversations")] = 400,
    split_digits: Annotated[bool, typer.Option("--split-digits", help="tokenize numbers digit by digit from now on (small models copy numbers far better)")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, mps")] = "auto",
    force: Annotated[bool, typer.Option("--force", help="replace an existing OUTPUT (or --export-data file)")] = False,
    export_data: Annotated[Optional[Path], typer.Option("--export-data", help="write the conversations to this JSONL file and exit")] = None,
) -> None:
    """Chat-tune BASE on conversations; only the assistant's tokens are trained.

    The result is a run that `llmkit chat` talks to with the chat template."""
    from llmkit.finetune.sft import SFTConfig, train_sft
    from llmkit.finetune.sft_data import default_sft_dataset, load_conversations, save_conversations

    if export_data is None and (base is None or output is None):
        fail("give BASE and --output RUN to train (or --export-data PATH to write the data set)")
    if export_data is None:
        from llmkit.inference import model_dir

        model_dir(base)  # a wrong BASE fails before the data is made
    cfg = None if export_data else SFTConfig(steps=steps, batch_size=batch_size, lr=lr, max_len=max_len, seed=seed, device=device,
                                             split_digits=split_digits)
    if data == "tools":
        from llmkit.agents.data import tool_use_dataset

        convs = tool_use_dataset(n_arith, n_large, n_rag, seed)
    else:
        convs = default_sft_dataset(n_arith, n_qa, seed) if data == "default" else load_conversations(data)
    if export_data is not None:
        save_conversations(export_data, convs, overwrite=force)
        console.print(f"wrote {len(convs)} conversations to {export_data}", highlight=False)
        return
    err_console.print(f"{len(convs)} conversations from {'the generated set' if data in ('default', 'tools') else data}", highlight=False)
    m = train_sft(base, convs, output, cfg, overwrite=force, log=lambda s: err_console.print(s, highlight=False, markup=False))
    if m["val_loss"] is not None:
        console.print(f"val loss on assistant tokens: {m['initial_val_loss']:.3f} -> {m['val_loss']:.3f}", highlight=False)
    console.print(f"chat-tuned run: {output} (try: llmkit chat {output})", highlight=False)


def chat_session(
    model, tok, lines: Iterable[str], *, max_new_tokens: int, temperature: float, top_k: int | None, top_p: float, seed: int | None,
) -> None:
    """``llmkit chat`` for a chat-tuned model: each line is a user message; the reply is
    generated with the chat template and printed as ``> reply``. Calculator calls are run
    and shown (dim, on stderr) before the answer. /reset forgets, /exit quits."""
    from rich.markup import escape

    from llmkit.finetune.calculator import calculator_tool
    from llmkit.chat import ChatTemplate, chat_turns

    template = ChatTemplate(tok)
    tools = {"calculator": calculator_tool}
    history: list[dict] = []
    err_console.print("chat-tuned model: type a message and press enter; /reset forgets the conversation, /exit quits")
    for line in lines:
        line = line.rstrip("\n")
        if line.strip() == "/exit":
            break
        if line.strip() == "/reset":
            history = []
            continue
        history.append({"role": "user", "content": line})
        new = chat_turns(model, template, history, tools=tools, max_new_tokens=max_new_tokens,
                         temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        for m in new:
            if m["role"] == "tool":
                err_console.print(f"[dim]  -> {escape(m['content'])}[/]", highlight=False)
            elif m.get("tool_calls"):
                calls = ", ".join(f"{c['name']}({_args(c['arguments'])})" for c in m["tool_calls"])
                err_console.print(f"[dim]tool call: {escape(calls)}[/]", highlight=False)
        history += new
        final = new[-1]
        if final.get("tool_calls"):
            err_console.print("[dim](stopped: too many tool calls in a row)[/]")
        console.print(f"> {final['content']}", highlight=False, markup=False)


def _args(arguments: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in arguments.items())
