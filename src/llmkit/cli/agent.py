"""``llmkit agent "task"``: a tool-calling loop over a model that can call tools."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from llmkit.cli._common import cli_errors, console, err_console, fail


@cli_errors
def agent(
    task: Annotated[str, typer.Argument(help="what to do, in words")],
    backend: Annotated[str, typer.Option("--backend", help="openai:http://HOST:PORT/v1#MODEL (a server with tool calling) or llmkit:RUN (chat-tuned here)")],
    tools: Annotated[str, typer.Option("--tools", help="comma-separated: calculator, python, read_file, rag_search")] = "calculator",
    max_steps: Annotated[int, typer.Option("--max-steps", help="model calls at most")] = 6,
    root: Annotated[Optional[Path], typer.Option("--root", help="the folder read_file may read (default: the current one)")] = None,
    rag_index: Annotated[Optional[str], typer.Option("--rag-index", help="the index rag_search searches (default: runs/index)")] = None,
    rag_k: Annotated[int, typer.Option("--rag-k", help="passages rag_search returns unless the model asks for another number")] = 3,
    rag_chars: Annotated[int, typer.Option("--rag-chars", help="characters per rag_search passage (longer ones show their best part)")] = 1200,
    system: Annotated[Optional[str], typer.Option("--system", help="the system prompt ('' for none; default: the loop's own)")] = None,
    transcript: Annotated[Optional[Path], typer.Option("--transcript", help="save every message as JSONL here")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="print only the answer")] = False,
) -> None:
    """Work on TASK with a model and tools: run its tool calls, feed back the results, print the answer."""
    from llmkit.agents.loop import DEFAULT_SYSTEM, run_agent, tool_model
    from llmkit.agents.tools import BUILTIN_TOOLS, configure

    names = [t.strip() for t in tools.split(",") if t.strip()]
    unknown = [n for n in names if n not in BUILTIN_TOOLS]
    if unknown:
        fail(f"unknown tool {unknown[0]!r}; choose from {', '.join(BUILTIN_TOOLS)}")
    if max_steps < 1:
        fail("--max-steps must be >= 1")
    if not 1 <= rag_k <= 10:
        fail("--rag-k must be between 1 and 10")
    if rag_chars < 20:
        fail("--rag-chars must be >= 20")
    if transcript is not None and transcript.exists():
        fail(f"{transcript} already exists; choose another --transcript")
    configure(root=root, index=rag_index, rag_k=rag_k, rag_chars=rag_chars)
    result = run_agent(task, tool_model(backend), {n: BUILTIN_TOOLS[n] for n in names}, max_steps=max_steps,
                       system=DEFAULT_SYSTEM if system is None else (system or None),
                       log=(lambda s: None) if quiet else (lambda s: err_console.print(s, highlight=False, markup=False)))
    if transcript is not None:
        result.save(transcript)
    if result.stopped != "answer":
        err_console.print(f"stopped after {result.steps} steps without a final answer", highlight=False)
    console.print(result.answer, highlight=False, markup=False, soft_wrap=True)
