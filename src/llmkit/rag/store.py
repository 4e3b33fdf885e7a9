"""The embedded store: one directory, no server.

Why these libraries: FAISS (``faiss-cpu``, a plain wheel) searches the vectors: an exact
inner-product index (``IndexFlatIP``, BLAS, all cores) answers in milliseconds up to a few
hundred thousand chunks, and FAISS's approximate indexes take over past that without changing
the interface. SQLite (Python's own ``sqlite3``; no extension to load, which these machines'
Python cannot) holds the text and metadata. ``bm25s`` (sparse matrices, fast) is the keyword
index. A directory is written whole, into a temporary sibling renamed into place at the end,
so a crash while indexing leaves the previous index as it was.

Layout of INDEX/::

    meta.json       format, embedder, dimension, chunking settings, counts
    chunks.sqlite   documents (id, title, source, sha256, chunk range) and chunks (text, spans)
    vectors.npy     (n_chunks, dim) float32 unit vectors, row i = chunk i
    bm25/           the bm25s index over the same chunks
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmkit.rag.chunk import Chunk

__all__ = ["FORMAT", "EmbeddedStore", "StoredDocument", "bm25_tokens", "open_store", "write_store"]

FORMAT = 1


@dataclass
class StoredDocument:
    id: str
    title: str
    source: str
    sha256: str
    first_chunk: int
    n_chunks: int


def bm25_tokens(texts: Sequence[str]) -> list[list[str]]:
    """The keyword index's tokens: lower-case words of 2+ characters, English stopwords out
    (bm25s's own rule, also used for queries)."""
    import bm25s

    return bm25s.tokenize(list(texts), return_ids=False, show_progress=False, stopwords="english")


def write_store(out: str | os.PathLike, meta: dict, docs: Sequence[StoredDocument], chunks: Sequence[Chunk], vectors: np.ndarray,
                *, overwrite: bool = True) -> Path:
    """Write a complete index directory atomically (see the module docstring)."""
    import bm25s

    from llmkit._io import staged_dir

    if len(chunks) != len(vectors):
        raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
    with staged_dir(out, overwrite=overwrite) as tmp:
        db = sqlite3.connect(tmp / "chunks.sqlite")
        try:
            db.executescript(
                "CREATE TABLE documents (id TEXT PRIMARY KEY, title TEXT, source TEXT, sha256 TEXT, first_chunk INTEGER, n_chunks INTEGER);"
                "CREATE TABLE chunks (row INTEGER PRIMARY KEY, doc_id TEXT, title TEXT, section TEXT, text TEXT,"
                " start INTEGER, end_ INTEGER, line_start INTEGER, line_end INTEGER);"
            )
            db.executemany("INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?)", [(d.id, d.title, d.source, d.sha256, d.first_chunk, d.n_chunks) for d in docs])
            db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [(i, c.doc_id, c.title, c.section, c.text, c.start, c.end, c.line_start, c.line_end) for i, c in enumerate(chunks)])
            db.commit()
        finally:
            db.close()
        np.save(tmp / "vectors.npy", np.ascontiguousarray(vectors, dtype=np.float32))
        if chunks:
            retriever = bm25s.BM25()
            retriever.index(bm25_tokens([f"{c.title}\n{c.section}\n{c.text}" for c in chunks]), show_progress=False)
            retriever.save(str(tmp / "bm25"), show_progress=False)
        (tmp / "meta.json").write_text(json.dumps({"format": FORMAT, **meta, "documents": len(docs), "chunks": len(chunks)}, indent=2) + "\n")
    return Path(out)


class EmbeddedStore:
    """An index directory opened for search. ``dense(vector, k)`` and ``keyword(query, k)``
    return (chunk row, score) pairs, best first; ``chunk(row)`` the chunk."""

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        meta_file = path / "meta.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{path} is not an llmkit RAG index (no meta.json); build one with `llmkit rag index`")
        self.meta = json.loads(meta_file.read_text())
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{path}: index format {self.meta.get('format')} is not {FORMAT}; rebuild it with `llmkit rag index`")
        self.path = path
        self.db = sqlite3.connect(f"file:{path / 'chunks.sqlite'}?mode=ro", uri=True, check_same_thread=False)
        self.vectors = np.load(path / "vectors.npy", mmap_mode=None)
        self._faiss = None
        self._bm25 = None

    def __len__(self) -> int:
        return int(self.meta["chunks"])

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- search
    def _vector_index(self):
        if self._faiss is None:
            import faiss

            index = faiss.IndexFlatIP(self.vectors.shape[1])
            if len(self.vectors):
                index.add(self.vectors)
            self._faiss = index
        return self._faiss

    def dense(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        if not len(self) or k < 1:
            return []
        scores, rows = self._vector_index().search(np.asarray(vector, dtype=np.float32).reshape(1, -1), min(k, len(self)))
        return [(int(r), float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0]

    def keyword(self, query: str, k: int) -> list[tuple[int, float]]:
        import bm25s

        if not len(self) or k < 1:
            return []
        if self._bm25 is None:
            self._bm25 = bm25s.BM25.load(str(self.path / "bm25"), show_progress=False)
        tokens = bm25_tokens([query])
        vocab = self._bm25.vocab_dict
        if not any(t in vocab for t in tokens[0]):
            return []
        rows, scores = self._bm25.retrieve([[t for t in tokens[0] if t in vocab]], k=min(k, len(self)), show_progress=False, n_threads=1)
        return [(int(r), float(s)) for r, s in zip(rows[0], scores[0]) if s > 0]

    # -- reading
    def vectors_of(self, rows: Sequence[int]) -> np.ndarray:
        return self.vectors[list(rows)]

    def chunk(self, row: int) -> Chunk:
        r = self.db.execute("SELECT doc_id, title, section, text, start, end_, line_start, line_end FROM chunks WHERE row = ?", (int(row),)).fetchone()
        if r is None:
            raise KeyError(f"no chunk {row}")
        return Chunk(*r)

    def documents(self) -> list[StoredDocument]:
        return [StoredDocument(*r) for r in self.db.execute("SELECT id, title, source, sha256, first_chunk, n_chunks FROM documents ORDER BY first_chunk")]

    def chunks_of(self, doc: StoredDocument) -> list[Chunk]:
        return [self.chunk(i) for i in range(doc.first_chunk, doc.first_chunk + doc.n_chunks)]


def open_store(index):
    """An index by its location: a directory (the embedded store) or ``postgresql://...#name``
    (:class:`llmkit.rag.pgstore.PgVectorStore`)."""
    from llmkit.rag.pgstore import PgVectorStore, is_pg_uri

    if isinstance(index, (EmbeddedStore, PgVectorStore)):
        return index
    return PgVectorStore(index) if is_pg_uri(index) else EmbeddedStore(index)
