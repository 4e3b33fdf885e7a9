"""Retrieval: dense (embeddings), keyword (BM25) and hybrid (both, fused by reciprocal rank,
Cormack et al. 2009: score = sum over the two rankings of 1 / (60 + rank)), with optional MMR
(maximal marginal relevance, Carbonell & Goldstein 1998) to trade a little relevance for less
repetition among the chunks returned."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from llmkit.rag.chunk import Chunk
from llmkit.rag.embed import Embedder, make_embedder
from llmkit.rag.store import EmbeddedStore, open_store

__all__ = ["METHODS", "Hit", "Retriever", "rrf"]

METHODS = ("dense", "bm25", "hybrid")
RRF_K = 60


@dataclass
class Hit:
    row: int
    score: float
    chunk: Chunk


def rrf(rankings: list[list[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion of ranked row lists: rows by the sum of 1 / (k + rank), rank from 1."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, row in enumerate(ranking, 1):
            scores[row] = scores.get(row, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


class Retriever:
    """Search an index: ``retrieve(question, k, method="hybrid", mmr=None)``."""

    def __init__(self, index: str | os.PathLike | EmbeddedStore, embedder: Embedder | None = None, *, pool: int = 50):
        """``index``: a directory, ``postgresql://...#name``, or an opened store."""
        self.store = open_store(index)
        self.embedder = embedder or make_embedder(_embedder_spec(self.store))
        if self.embedder.name != self.store.meta["embedder"]:
            raise ValueError(f"the index was embedded with {self.store.meta['embedder']}, not {self.embedder.name}")
        self.pool = pool

    def rows(self, question: str, k: int, method: str = "hybrid") -> list[tuple[int, float]]:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        if not question.strip():
            raise ValueError("empty question")
        if method == "dense":
            return self.store.dense(self.embedder.embed([question])[0], k)
        if method == "bm25":
            return self.store.keyword(question, k)
        pool = max(self.pool, k)
        dense = [r for r, _ in self.store.dense(self.embedder.embed([question])[0], pool)]
        keyword = [r for r, _ in self.store.keyword(question, pool)]
        return rrf([dense, keyword])[:k]

    def retrieve(self, question: str, k: int = 5, method: str = "hybrid", mmr: float | None = None) -> list[Hit]:
        """The ``k`` best chunks for ``question``. With ``mmr`` (lambda in [0, 1]; 1 = pure
        relevance), chunks are picked one by one from a larger pool, each maximising
        ``lambda * relevance - (1 - lambda) * max similarity to those already picked``."""
        if k < 1:
            raise ValueError("k must be >= 1")
        if mmr is None:
            return [Hit(r, s, self.store.chunk(r)) for r, s in self.rows(question, k, method)]
        if not 0 <= mmr <= 1:
            raise ValueError("mmr (lambda) must be in [0, 1]")
        ranked = self.rows(question, max(self.pool, 4 * k), method)
        rows = [r for r, _ in ranked]
        chosen = [rows[i] for i in _mmr(self.store.vectors_of(rows), self.embedder.embed([question])[0], k, mmr)]
        score = dict(ranked)
        return [Hit(r, score[r], self.store.chunk(r)) for r in chosen]


def _mmr(v: np.ndarray, query: np.ndarray, k: int, lam: float) -> list[int]:
    """Positions into ``v`` (n, d) unit vectors of the candidates, in the order MMR picks them."""
    if not len(v):
        return []
    relevance = v @ query  # (n,)
    chosen: list[int] = []
    left = list(range(len(v)))
    while left and len(chosen) < k:
        if chosen:
            redundancy = (v[left] @ v[chosen].T).max(axis=1)
        else:
            redundancy = np.zeros(len(left))
        best = int(np.argmax(lam * relevance[left] - (1 - lam) * redundancy))
        chosen.append(left.pop(best))
    return chosen


def _embedder_spec(store: EmbeddedStore) -> str:
    name = store.meta.get("embedder", "minilm")
    return "minilm" if name == "all-MiniLM-L6-v2" else name
