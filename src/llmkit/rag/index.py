"""Building an index: documents -> chunks -> embeddings -> the store, incrementally.

    report = build_index(["docs/"], "runs/index")             # or corpus="pydocs" (the default)
    report = build_index(["docs/"], "runs/index")             # again: nothing changed, nothing embedded

Re-indexing into an existing index reuses the chunks and vectors of every document whose
content hash and id are unchanged (when the embedder and the chunk settings are the same too),
embeds only new and changed documents, and drops documents that are gone. The new index is
written whole beside the old one and renamed into place, so a crash midway leaves the old one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmkit.rag.chunk import Chunk, chunk_document
from llmkit.rag.embed import Embedder, make_embedder
from llmkit.rag.ingest import Document, Skipped, collect_documents, corpus_documents
from llmkit.rag.pgstore import is_pg_uri, write_pg_store
from llmkit.rag.store import StoredDocument, open_store, write_store

__all__ = ["IndexReport", "build_index"]


@dataclass
class IndexReport:
    path: str
    documents: int
    chunks: int
    embedded_documents: int
    """New or changed documents, whose chunks were embedded now."""
    reused_documents: int
    removed_documents: int
    embedded_chunks: int
    seconds: float
    embed_seconds: float
    skipped: list[Skipped] = field(default_factory=list)

    def summary(self) -> str:
        rate = f", {self.embedded_chunks / self.embed_seconds:.0f} chunks/s" if self.embed_seconds > 0 and self.embedded_chunks else ""
        return (f"{self.path}: {self.documents:,} documents, {self.chunks:,} chunks; embedded {self.embedded_chunks:,} chunks of "
                f"{self.embedded_documents:,} new or changed documents{rate}, reused {self.reused_documents:,}, removed "
                f"{self.removed_documents:,}, skipped {len(self.skipped):,} files; {self.seconds:.1f} s")


def build_index(
    paths: Sequence[str | os.PathLike] = (),
    out: str | os.PathLike = "runs/index",
    # a directory (the embedded store), or postgresql://user@host/db#name (PostgreSQL + pgvector)
    *,
    corpus: str | None = None,
    embedder: Embedder | None = None,
    max_tokens: int = 200,
    overlap: int = 40,
    documents: Sequence[Document] | None = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda s: None,
) -> IndexReport:
    """Index ``paths`` (files and directories) and/or ``corpus`` (``pydocs``) or ready-made
    ``documents`` into ``out``. With none of them, the ``pydocs`` corpus. An existing index at
    ``out`` is updated (see the module docstring); anything else there is refused."""
    t0 = time.perf_counter()
    out = str(out) if is_pg_uri(str(out)) else Path(out)
    docs: list[Document] = list(documents or [])
    skipped: list[Skipped] = []
    if paths:
        found, skipped = collect_documents(paths)
        docs += found
    if corpus or (not paths and documents is None):
        docs += corpus_documents(corpus or "pydocs")
    if not docs:
        raise ValueError("nothing to index: every file was skipped" + (f" ({skipped[0].path}: {skipped[0].reason})" if skipped else ""))
    ids = [d.id for d in docs]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"two documents have the id {dup!r}")
    embedder = embedder or make_embedder()
    if max_tokens > embedder.max_tokens - 2:
        raise ValueError(f"chunks of {max_tokens} tokens do not fit the embedder's {embedder.max_tokens}")
    settings = {"embedder": embedder.name, "dim": embedder.dim, "max_tokens": max_tokens, "overlap": overlap}
    old = _previous(out, settings, log)
    new_chunks: list[Chunk] = []
    new_vectors: list[np.ndarray] = []
    stored: list[StoredDocument] = []
    to_embed: list[tuple[int, list[Chunk]]] = []  # (position in new_chunks, chunks) of changed documents
    reused = 0
    for d in docs:
        prev = old.get(d.id) if old else None
        first = len(new_chunks)
        if prev is not None and prev[0].sha256 == d.sha256:
            chunks, vecs = prev[1], prev[2]
            reused += 1
            new_vectors.append(vecs)
        else:
            chunks = chunk_document(d, embedder.count_tokens, max_tokens=max_tokens, overlap=overlap)
            to_embed.append((first, chunks))
            new_vectors.append(np.zeros((len(chunks), embedder.dim), dtype=np.float32))
        new_chunks += chunks
        stored.append(StoredDocument(d.id, d.title, d.source, d.sha256, first, len(chunks)))
    vectors = np.concatenate(new_vectors) if new_vectors else np.zeros((0, embedder.dim), dtype=np.float32)
    texts = [f"{c.title}\n{c.text}" for _, chunks in to_embed for c in chunks]  # the title gives a chunk its context
    log(f"embedding {len(texts):,} chunks of {len(to_embed):,} new or changed documents with {embedder.name}")
    t1 = time.perf_counter()
    fresh = embedder.embed(texts, progress=progress)
    embed_seconds = time.perf_counter() - t1
    k = 0
    for first, chunks in to_embed:
        vectors[first : first + len(chunks)] = fresh[k : k + len(chunks)]
        k += len(chunks)
    if isinstance(out, str):
        write_pg_store(out, settings, stored, new_chunks, vectors)
    else:
        write_store(out, settings, stored, new_chunks, vectors, overwrite=old is not None)
    removed = len(set(old) - set(ids)) if old else 0
    return IndexReport(str(out), len(docs), len(new_chunks), len(to_embed), reused, removed, len(texts), time.perf_counter() - t0, embed_seconds, skipped)


def _previous(out, settings: dict, log) -> dict[str, tuple[StoredDocument, list[Chunk], np.ndarray]] | None:
    """The reusable part of an index already at ``out``: doc id -> (document, chunks, vectors).
    None when ``out`` is free; {} when it is an index built with other settings (all re-embedded)."""
    if isinstance(out, str):  # PostgreSQL
        try:
            store = open_store(out)
        except FileNotFoundError:
            return None
    else:
        if not out.exists() or (out.is_dir() and not any(out.iterdir())):
            return None
        if not (out / "meta.json").is_file():
            raise FileExistsError(f"{out} exists and is not an llmkit RAG index; choose another --output")
        store = open_store(out)
    with store:
        if any(store.meta.get(k) != v for k, v in settings.items()):
            log(f"{out} was built with other settings ({store.meta.get('embedder')}, {store.meta.get('max_tokens')} tokens): re-embedding everything")
            return {}
        return {d.id: (d, store.chunks_of(d), np.array(store.vectors_of(range(d.first_chunk, d.first_chunk + d.n_chunks)), dtype=np.float32).reshape(d.n_chunks, -1))
                for d in store.documents()}
