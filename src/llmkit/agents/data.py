"""Training data for a tool-using model: calculator word problems (from
:mod:`llmkit.finetune.sft_data`) and ``rag_search`` conversations about the standard library.

A ``rag_search`` conversation: the user asks what ``module.function`` does, the assistant
calls ``rag_search({"query": "module.function"})``, the tool answers with the passage the
real tool shows when retrieval finds the function's documentation (:func:`format_passage`
over the pydocs text from the function's header on, cut to ``max_chars``), and the assistant
answers with the documentation's first sentence, which that passage holds. (No system prompt:
with a 128-token context every token counts.) So the model
learns to search and then to quote what came back, not to recite documentation from memory.

Functions are split once into training and held-out ones (by a hash of the name), so an
evaluation can ask about functions the model never saw in training.
"""

from __future__ import annotations

import random
import re
import zlib

from llmkit.agents.tools import format_passage
from llmkit.chat import Conversation
from llmkit.finetune.sft_data import (
    _QUESTIONS,
    LARGE_NUMBER_KINDS,
    PROBLEM_KINDS,
    FunctionDoc,
    _check_count,
    arithmetic_conversations,
    documented_functions,
)

__all__ = ["RAG_SEARCH", "SNIPPET_CHARS", "rag_search_conversations", "rag_search_tasks", "tool_use_dataset"]

RAG_SEARCH = "rag_search"
SNIPPET_CHARS = 100
"""Passage length (characters) for a model with a 128-token context: question, call,
passage and answer then fit."""
MAX_SUMMARY_CHARS = 90
HELD_OUT_PERCENT = 20


def _held_out(f: FunctionDoc) -> bool:
    return zlib.crc32(f.qualname.encode()) % 100 < HELD_OUT_PERCENT


def _searchable(corpus=None, *, max_chars: int = SNIPPET_CHARS) -> list[tuple[FunctionDoc, str]]:
    """``(function, passage as rag_search shows it)`` for every documented function whose
    passage holds its first sentence within ``max_chars``."""
    if corpus is None:
        from llmkit.data.corpora import load_corpus

        corpus = load_corpus("pydocs")
    texts = {doc.id: doc.text.split("\n") for doc in corpus}
    out = []
    for f in documented_functions(corpus):
        if len(f.summary) > MAX_SUMMARY_CHARS:
            continue
        lines = texts[f.module]
        header = re.compile(rf"^    {re.escape(f.name)}\(")
        i = next((k for k, ln in enumerate(lines) if header.match(ln)), None)
        if i is None:
            continue
        passage = "\n".join(lines[i : i + 40])
        shown = format_passage(1, f.module, i + 1, min(i + 40, len(lines)), passage, f.qualname, max_chars)
        if " ".join(f.summary.split()) in " ".join(shown.split()):
            out.append((f, shown))
    return out


def _pool(held_out: bool, corpus=None, max_chars: int = SNIPPET_CHARS) -> list[tuple[FunctionDoc, str]]:
    return [(f, shown) for f, shown in _searchable(corpus, max_chars=max_chars) if _held_out(f) == held_out]


def _conversations(pool: list[tuple[FunctionDoc, str]], n: int, seed: int, what: str) -> list[tuple[FunctionDoc, Conversation]]:
    _check_count(n)
    if n > len(pool):
        raise ValueError(f"asked for {n} rag_search conversations but only {len(pool)} {what} functions qualify")
    rng = random.Random(seed)
    out = []
    for f, shown in rng.sample(pool, n):
        conv = [
            {"role": "user", "content": rng.choice(_QUESTIONS).format(f=f.qualname)},
            {"role": "assistant", "content": "", "tool_calls": [{"name": RAG_SEARCH, "arguments": {"query": f.qualname}}]},
            {"role": "tool", "name": RAG_SEARCH, "content": shown},
            {"role": "assistant", "content": " ".join(f.summary.split())},
        ]
        out.append((f, conv))
    return out


def rag_search_conversations(n: int, seed: int = 0, *, held_out: bool = False, corpus=None,
                             max_chars: int = SNIPPET_CHARS) -> list[Conversation]:
    """``n`` conversations about distinct stdlib functions (training functions, or the
    held-out ones with ``held_out=True``): question, ``rag_search`` call with the function's
    name, the passage, and the documented first sentence as the answer."""
    what = "held-out" if held_out else "training"
    return [conv for _, conv in _conversations(_pool(held_out, corpus, max_chars), n, seed, what)]


def rag_search_tasks(n: int | None = None, seed: int = 0, *, corpus=None) -> list[dict]:
    """``[{"question", "query", "module", "answer"}]``: ``n`` (default all) held-out functions
    to ask a tool-using model about."""
    pool = _pool(True, corpus)
    return [{"question": conv[0]["content"], "query": f.qualname, "module": f.module, "answer": conv[-1]["content"]}
            for f, conv in _conversations(pool, len(pool) if n is None else n, seed, "held-out")]


def tool_use_dataset(n_arith: int = 6000, n_large: int = 3000, n_rag: int = 400, seed: int = 0, *, corpus=None) -> list[Conversation]:
    """The tool-use training set: ``n_arith`` word problems of every kind, ``n_large`` more
    with 3-4 digit operands (half of both with a short system prompt, half with none),
    ``n_rag`` rag_search conversations (training functions, no system prompt; past their
    number, each function comes again with another phrasing), shuffled
    together (deterministic for ``seed``). A model trained on it is run with no system
    prompt or that short one: a 128-token context has no room for a long one."""
    _check_count(n_rag)
    convs = arithmetic_conversations(n_arith, seed, kinds=PROBLEM_KINDS)
    convs += arithmetic_conversations(n_large, seed + 1, kinds=LARGE_NUMBER_KINDS) if n_large else []
    if n_rag:
        pool = _pool(False, corpus)
        if not pool:
            raise ValueError("no documented function of the corpus qualifies for rag_search conversations")
        for k in range(0, n_rag, len(pool)):  # more than there are functions: another pass, other phrasings
            convs += [conv for _, conv in _conversations(pool, min(len(pool), n_rag - k), seed + k, "training")]
    random.Random(seed).shuffle(convs)
    return convs
