"""``llmkit generate``, ``llmkit chat`` and ``llmkit attention``: use a trained model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from llmkit.cli._common import cli_errors, console, err_console, fail

RunArg = Annotated[Path, typer.Argument(help="a run directory (llmkit train -o RUN) or a model directory")]
MaxNew = Annotated[int, typer.Option("--max-new-tokens", "-n", help="tokens to generate at most")]
Temp = Annotated[float, typer.Option("--temperature", help="0 = greedy; higher = more random")]
TopK = Annotated[Optional[int], typer.Option("--top-k", help="sample among the k most likely tokens")]
TopP = Annotated[float, typer.Option("--top-p", help="sample in the smallest set with this much probability")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="seed for reproducible sampling")]


def _load_causal(run: Path, max_new_tokens: int, temperature: float, top_k: int | None, top_p: float):
    from llmkit.generation import check_sampling
    from llmkit.inference import load_pretrained

    if max_new_tokens < 1:
        fail("--max-new-tokens must be >= 1")
    check_sampling(temperature, top_k, top_p)  # bad settings fail before the model loads

    model, tok, kind = load_pretrained(run)
    if kind == "bert":
        fail("this is a BERT encoder (masked LM); it does not generate text left to right")
    return model, tok


@cli_errors
def generate(
    run: RunArg,
    prompt: Annotated[str, typer.Argument(help="text to continue ('' starts from <|endoftext|>)")],
    max_new_tokens: MaxNew = 100,
    temperature: Temp = 0.8,
    top_k: TopK = 50,
    top_p: TopP = 1.0,
    seed: Seed = None,
) -> None:
    """Continue PROMPT with a trained model, streaming the text as it is generated."""
    from llmkit.generation import stream

    model, tok = _load_causal(run, max_new_tokens, temperature, top_k, top_p)
    pieces = stream(model, tok, prompt, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    sys.stdout.write(prompt)
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


@cli_errors
def chat(
    run: RunArg,
    max_new_tokens: MaxNew = 80,
    temperature: Temp = 0.7,
    top_k: TopK = 50,
    top_p: TopP = 1.0,
    seed: Seed = None,
) -> None:
    """Talk to a model line by line (/reset forgets, /exit quits).

    Each reply continues the conversation so far and ends at a blank line or <|endoftext|>. A
    chat-tuned run (llmkit finetune sft) uses its chat template instead, ends replies at <|end|>
    and runs its calculator calls."""
    from llmkit.chat import has_chat_tokens
    from llmkit.generation import stream

    model, tok = _load_causal(run, max_new_tokens, temperature, top_k, top_p)
    if has_chat_tokens(tok):
        from llmkit.cli.sft import chat_session

        chat_session(model, tok, sys.stdin, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        return
    history = ""
    err_console.print("type a line and press enter; /reset forgets the conversation, /exit quits")
    for line in sys.stdin:
        line = line.rstrip("\n")
        if line.strip() == "/exit":
            break
        if line.strip() == "/reset":
            history = ""
            continue
        history += line + "\n"
        reply = ""
        for piece in stream(model, tok, history, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed):
            reply += piece
            if "\n\n" in reply:
                reply = reply[: reply.index("\n\n")]
                break
        reply = reply.strip("\n")
        console.print(f"> {reply}", highlight=False, markup=False)
        history += reply + "\n\n"


@cli_errors
def attention(
    run: RunArg,
    text: Annotated[str, typer.Argument(help="text to run through the model")],
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG file to write")],
    layer: Annotated[int, typer.Option("--layer", help="layer index (0-based)")] = 0,
    head: Annotated[int, typer.Option("--head", help="head index (0-based)")] = 0,
    force: Annotated[bool, typer.Option("--force", help="replace an existing OUTPUT")] = False,
) -> None:
    """Draw the attention weights of one head as a heatmap (rows attend to columns)."""
    from llmkit import viz
    from llmkit.inference import attention_map, load_pretrained

    if output.exists() and not force:
        fail(f"{output} already exists; pass --force to replace it")
    if output.suffix.lower() != ".png":
        fail("the output must be a .png file")
    model, tok, kind = load_pretrained(run)
    weights, labels = attention_map(model, tok, text, layer, head)
    if len(labels) < len(tok.encode(text)):
        err_console.print(f"note: the text was cut to the model's context of {len(labels)} tokens")
    viz.attention_heatmap(output, weights.numpy(), labels, title=f"{kind}: layer {layer}, head {head}")
    console.print(f"wrote {output} ({len(labels)} tokens)")
