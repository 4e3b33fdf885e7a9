"""The built-in tools, plain typed functions (their schemas: :func:`llmkit.agents.schema.tool_schema`):

    from llmkit.agents.tools import calculator, python, read_file, rag_search
    calculator("12 * (7 + 3)")          # '120'
    python("print(sum(range(10)))")    # '45'

``read_file`` is confined to a root directory and ``rag_search`` searches an ``llmkit rag``
index; both read their setting from :func:`configure` (default: the current directory and
``runs/index``), and :func:`make_read_file` / :func:`make_rag_search` build ones bound to
another root or index. Errors are raised as exceptions with one-line messages; the agent loop
(and :func:`llmkit.agents.schema.call_tool`) hands them to the model as ``error: ...``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["BUILTIN_TOOLS", "calculator", "configure", "make_rag_search", "make_read_file", "python", "rag_search", "read_file"]

_settings = {"root": None, "index": "runs/index", "python_timeout": 10.0, "python_memory_mb": 512}
_retrievers: dict[str, object] = {}
MAX_FILE_CHARS = 20_000


def configure(*, root: str | os.PathLike | None = None, index: str | os.PathLike | None = None, python_timeout: float | None = None,
              python_memory_mb: int | None = None) -> None:
    """Set what ``read_file`` may read (``root``), what ``rag_search`` searches (``index``) and the
    python tool's limits."""
    for key, value in (("root", root), ("index", index), ("python_timeout", python_timeout), ("python_memory_mb", python_memory_mb)):
        if value is not None:
            _settings[key] = str(value) if key in ("root", "index") else value


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly (numbers, + - * / // % ** and parentheses).

    Args:
        expression: the arithmetic to compute, e.g. "1234 * 5678" or "(3.5 + 2) / 4".
    """
    from llmkit.finetune.calculator import evaluate, format_number

    return format_number(evaluate(expression))


def python(code: str) -> str:
    """Run Python code in a sandbox (no network, no files outside its own folder, time and memory
    limits) and return what it prints.

    Args:
        code: a Python program; print what you want to see.
    """
    from llmkit.agents.sandbox import run_python

    r = run_python(code, timeout=float(_settings["python_timeout"]), memory_mb=int(_settings["python_memory_mb"]))
    if not r.ok:
        raise RuntimeError(r.error() + (f" (output before it: {r.stdout.strip()[:200]})" if r.stdout.strip() else ""))
    return r.stdout if r.stdout.strip() else "(no output)"


def make_read_file(root: str | os.PathLike) -> Callable[[str], str]:
    """A ``read_file`` tool that reads only inside ``root``."""
    base = Path(root).resolve()

    def read_file(path: str) -> str:
        """Read a text file (inside the agent's folder).

        Args:
            path: the file's path, relative to the agent's folder.
        """
        target = (base / path).resolve()
        if target != base and base not in target.parents:
            raise PermissionError(f"{path} is outside the folder this tool may read")
        if not target.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        text = target.read_bytes()[: MAX_FILE_CHARS * 4].decode("utf-8", errors="replace")
        return text if len(text) <= MAX_FILE_CHARS else text[:MAX_FILE_CHARS] + f"\n... (cut at {MAX_FILE_CHARS} characters)"

    return read_file


def read_file(path: str) -> str:
    """Read a text file (inside the agent's folder).

    Args:
        path: the file's path, relative to the agent's folder.
    """
    return make_read_file(_settings["root"] or os.getcwd())(path)


def make_rag_search(index: str | os.PathLike, k_default: int = 3) -> Callable[..., str]:
    """A ``rag_search`` tool over ``index`` (loaded on first use, then kept)."""

    def rag_search(query: str, k: int = k_default) -> str:
        """Search the documentation index; returns the best passages, each with its source.

        Args:
            query: what to look for, in words.
            k: how many passages to return (1 to 10).
        """
        from llmkit.rag.retrieve import Retriever

        if not 1 <= k <= 10:
            raise ValueError("k must be between 1 and 10")
        key = str(index)
        if key not in _retrievers:
            _retrievers[key] = Retriever(key)
        hits = _retrievers[key].retrieve(query, k)
        return "\n\n".join(f"[{i}] {h.chunk.doc_id} (lines {h.chunk.line_start}-{h.chunk.line_end}):\n{h.chunk.text.strip()[:1200]}"
                           for i, h in enumerate(hits, 1)) or "no passage found"

    return rag_search


def rag_search(query: str, k: int = 3) -> str:
    """Search the documentation index; returns the best passages, each with its source.

    Args:
        query: what to look for, in words.
        k: how many passages to return (1 to 10).
    """
    return make_rag_search(_settings["index"])(query, k)


BUILTIN_TOOLS: dict[str, Callable] = {"calculator": calculator, "python": python, "read_file": read_file, "rag_search": rag_search}
"""The tools ``llmkit agent --tools`` picks from, by name."""
