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
import re
from collections.abc import Callable
from pathlib import Path

__all__ = ["BUILTIN_TOOLS", "calculator", "configure", "format_passage", "make_rag_search", "make_read_file", "passage_snippet", "python",
           "rag_search", "read_file"]

_WORD = re.compile(r"[A-Za-z_]\w*")
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")  # heapq.heappush, os.path.join
_settings = {"root": None, "index": "runs/index", "python_timeout": 10.0, "python_memory_mb": 512, "rag_k": 3, "rag_chars": 1200}
_retrievers: dict[str, object] = {}
MAX_FILE_CHARS = 20_000


def configure(*, root: str | os.PathLike | None = None, index: str | os.PathLike | None = None, python_timeout: float | None = None,
              python_memory_mb: int | None = None, rag_k: int | None = None, rag_chars: int | None = None) -> None:
    """Set what ``read_file`` may read (``root``), what ``rag_search`` searches (``index``), how
    many passages it returns by default (``rag_k``) and how long each may be (``rag_chars``),
    and the python tool's limits."""
    for key, value in (("root", root), ("index", index), ("python_timeout", python_timeout), ("python_memory_mb", python_memory_mb),
                       ("rag_k", rag_k), ("rag_chars", rag_chars)):
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


def passage_snippet(text: str, query: str, max_chars: int) -> tuple[int, str]:
    """The part of a passage worth showing a model whose context is small: from the first
    line that defines one of the query's names (``heappush(...)`` for "heapq.heappush") or,
    failing that, the line holding the most of the query's words (the first line when none
    does), lines stripped of their indentation and blank ones dropped, cut to ``max_chars``
    at a line or word end ("..." marks a cut). Returns ``(line offset in text, snippet)``."""
    if max_chars < 20:
        raise ValueError("max_chars must be >= 20")
    lines = text.split("\n")
    terms = [t.lower() for t in _WORD.findall(query)]
    start = _definition_line(lines, _name_terms(query))
    if start is None:
        scores = [len(set(terms) & {w.lower() for w in _WORD.findall(ln)}) for ln in lines]
        start = max(range(len(lines)), key=lambda i: (scores[i], -i)) if lines else 0
    out = "\n".join(ln.strip() for ln in lines[start:] if ln.strip())
    if len(out) > max_chars:
        cut = out[: max_chars - 3]
        end = max(cut.rfind("\n"), cut.rfind(" "))
        out = (cut[:end] if end > max_chars // 2 else cut).rstrip() + "..."
    return start, out


def _name_terms(query: str) -> list[str]:
    """The query's words that name a function: the last part of a dotted name (``heapq.heappush``
    gives ``heappush``), a word written as a call (``dumps(``), in backticks or with an
    underscore, or the whole query when it is one word. Plain prose names nothing."""
    words = _WORD.findall(query)
    if len(words) == 1:
        return [words[0].lower()]
    names = [d.rsplit(".", 1)[1] for d in _DOTTED.findall(query)] + re.findall(r"([A-Za-z_]\w*)\s*\(", query)
    names += re.findall(r"`([A-Za-z_]\w*)`", query) + [w for w in words if "_" in w.strip("_")]
    return list(dict.fromkeys(n.lower() for n in names))


def _named_modules(query: str) -> set[str]:
    """The modules a query names: every prefix of its dotted names (``os.path.join`` gives
    ``os.path`` and ``os``)."""
    return {d.rsplit(".", i)[0] for d in _DOTTED.findall(query) for i in range(1, d.count(".") + 1)}


def _definition_line(lines: list[str], terms: list[str]) -> int | None:
    """The first line that starts ``term(`` for one of ``terms`` (the last term first)."""
    for t in reversed(terms):
        for i, ln in enumerate(lines):
            if ln.strip().lower().startswith(t + "("):
                return i
    return None


def format_passage(i: int, doc_id: str, line_start: int, line_end: int, text: str, query: str, max_chars: int) -> str:
    """How ``rag_search`` shows its ``i``-th passage: ``[i] doc (lines a-b):`` and the text when
    it fits ``max_chars``, else ``[i] doc (line n):`` and :func:`passage_snippet`'s part."""
    body = text.strip()
    if len(body) <= max_chars:
        return f"[{i}] {doc_id} (lines {line_start}-{line_end}):\n{body}"
    offset, snippet = passage_snippet(text, query, max_chars)
    return f"[{i}] {doc_id} (line {line_start + offset}):\n{snippet}"


def make_rag_search(index: str | os.PathLike, k_default: int = 3, max_chars: int = 1200) -> Callable[..., str]:
    """A ``rag_search`` tool over ``index`` (loaded on first use, then kept). Passages longer
    than ``max_chars`` show their best part (:func:`passage_snippet`): a model with a short
    context wants ``k_default=1`` and a few hundred characters."""
    if max_chars < 20:
        raise ValueError("max_chars must be >= 20")

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
        # A passage that defines a name of the query ("heappush(" for "heapq.heappush") goes
        # first: documentation searches are mostly for one function.
        # A named module ("heapq" of "heapq.heappush") must be the passage's own.
        terms = _name_terms(query)
        modules = _named_modules(query)
        pool = _retrievers[key].retrieve(query, max(k, 8))

        def defines(h) -> bool:
            return (not modules or h.chunk.doc_id in modules) and _definition_line(h.chunk.text.split("\n"), terms) is not None

        hits = sorted(pool, key=lambda h: not defines(h))[:k]
        return "\n\n".join(format_passage(i, h.chunk.doc_id, h.chunk.line_start, h.chunk.line_end, h.chunk.text, query, max_chars)
                             for i, h in enumerate(hits, 1)) or "no passage found"

    return rag_search


def rag_search(query: str, k: int | None = None) -> str:
    """Search the documentation index; returns the best passages, each with its source.

    Args:
        query: what to look for, in words.
        k: how many passages to return (1 to 10).
    """
    return make_rag_search(_settings["index"], max_chars=int(_settings["rag_chars"]))(query, int(_settings["rag_k"]) if k is None else k)


BUILTIN_TOOLS: dict[str, Callable] = {"calculator": calculator, "python": python, "read_file": read_file, "rag_search": rag_search}
"""The tools ``llmkit agent --tools`` picks from, by name."""
