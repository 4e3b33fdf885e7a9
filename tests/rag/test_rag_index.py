"""Ingesting, chunking and the incremental, transactional index.

Outside truths: the documents' own text (every chunk is a span of it, its lines are the
document's lines), pypdf reading a PDF written here by hand, the embedder's call log (what was
re-embedded), and numpy's brute-force cosine ranking for the stored vectors."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmkit.rag.chunk import chunk_document, word_count_tokens
from llmkit.rag.embed import Embedder
from llmkit.rag.index import build_index
from llmkit.rag.ingest import Document, collect_documents
from llmkit.rag.store import EmbeddedStore


class HashEmbedder(Embedder):
    """A deterministic stand-in: bag-of-words vectors hashed into 64 dimensions; logs its calls."""

    name = "hash-64"
    dim = 64
    max_tokens = 512

    def __init__(self):
        self.calls: list[list[str]] = []

    def embed(self, texts, *, batch_size=64, progress=False):
        self.calls.append(list(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def _minimal_pdf(text: str) -> bytes:
    """A one-page PDF showing ``text`` in Helvetica, with a correct cross-reference table."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = b"%PDF-1.4\n", []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode() + b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    return out + f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()


@pytest.fixture
def docs_dir(tmp_path):
    d = tmp_path / "docs"
    (d / "sub").mkdir(parents=True)
    (d / "notes.md").write_text("# Brewing tea\n\nBoil water, then steep green tea for two minutes.\n\n## Storage\n\nKeep leaves dry.\n")
    (d / "guide.rst").write_text("Bicycles\n========\n\nA chain needs oil every few hundred kilometres.\n")
    (d / "page.html").write_text("<html><head><title>Moon</title><script>var x=1;</script></head><body><h1>Phases</h1><p>The moon has eight phases.</p></body></html>")
    (d / "sub" / "code.py").write_text("def add(a, b):\n    \"\"\"Add two numbers.\"\"\"\n    return a + b\n")
    (d / "rows.jsonl").write_text(json.dumps({"id": "a", "title": "Cats", "text": "Cats sleep sixteen hours a day."}) + "\n"
                                  + json.dumps({"text": "Dogs need walks twice a day."}) + "\n")
    (d / "paper.pdf").write_bytes(_minimal_pdf("Volcanoes erupt molten rock called lava."))
    (d / "data.bin").write_bytes(b"\x00\x01")
    (d / "broken.txt").write_bytes(b"text\x00with a NUL")
    (d / ".hidden.txt").write_text("secret")
    return d


def test_collect_reads_each_format_and_lists_what_it_skips(docs_dir):
    docs, skipped = collect_documents([docs_dir, docs_dir / "missing.txt"])
    by_id = {d.id: d for d in docs}
    assert set(by_id) == {"docs/notes.md", "docs/guide.rst", "docs/page.html", "docs/sub/code.py", "docs/rows.jsonl#a", "docs/rows.jsonl#2", "docs/paper.pdf"}
    assert by_id["docs/notes.md"].title == "Brewing tea" and by_id["docs/guide.rst"].title == "Bicycles"
    assert by_id["docs/page.html"].title == "Moon" and "var x" not in by_id["docs/page.html"].text and "eight phases" in by_id["docs/page.html"].text
    assert "molten rock" in by_id["docs/paper.pdf"].text  # pypdf read the PDF
    assert by_id["docs/rows.jsonl#a"].title == "Cats"
    reasons = {s.path.split("/")[-1]: s.reason for s in skipped}
    assert "unsupported file type .bin" in reasons["data.bin"] and "NUL" in reasons["broken.txt"]
    assert reasons["missing.txt"] == "no such file or directory" and ".hidden.txt" not in reasons


TEXT = st.lists(st.text(alphabet=st.sampled_from(list("abc def\nXYZ.#=")), min_size=1, max_size=120), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None)
@given(TEXT, st.integers(12, 60))
def test_chunks_are_spans_within_the_budget_covering_the_text(paragraphs, max_tokens):
    text = "\n\n".join(paragraphs)
    doc = Document("d", "t", text)
    chunks = chunk_document(doc, max_tokens=max_tokens, overlap=max_tokens // 4, min_tokens=4)
    covered = [False] * len(text)
    for c in chunks:
        assert text[c.start : c.end] == c.text and c.text.strip()
        assert c.line_start == text.count("\n", 0, c.start) + 1 and c.line_end == text.count("\n", 0, c.end) + 1
        assert word_count_tokens([c.text])[0] <= max_tokens or len(c.text.split()) == 1  # one unbreakable word may exceed
        for i in range(c.start, c.end):
            covered[i] = True
    assert all(covered[i] for i, ch in enumerate(text) if not ch.isspace())  # nothing lost


def test_headings_start_chunks_and_name_their_section():
    text = "Intro\n=====\n\n" + "\n\n".join(f"Sentence number {i} about the intro." for i in range(12)) + "\n\nUsage\n=====\n\nCall it like this."
    chunks = chunk_document(Document("d", "t", text), max_tokens=30, overlap=8, min_tokens=4)
    assert chunks[0].section == "Intro" and chunks[-1].section == "Usage" and chunks[-1].text.startswith("Usage")
    assert any(a.end > b.start for a, b in zip(chunks, chunks[1:]) if a.section == b.section == "Intro")  # overlap


def test_index_is_incremental_and_drops_removed_files(docs_dir, tmp_path):
    emb = HashEmbedder()
    out = tmp_path / "index"
    first = build_index([docs_dir], out, embedder=emb)
    assert first.documents == 7 and first.embedded_documents == 7 and len(first.skipped) == 2
    emb.calls.clear()
    again = build_index([docs_dir], out, embedder=emb)
    assert again.embedded_chunks == 0 and again.reused_documents == 7 and emb.calls == [[]]
    (docs_dir / "notes.md").write_text("# Brewing tea\n\nSteep black tea for four minutes.\n")
    (docs_dir / "guide.rst").unlink()
    third = build_index([docs_dir], out, embedder=emb)
    assert (third.embedded_documents, third.reused_documents, third.removed_documents) == (1, 5, 1)
    assert all("black tea" in t for t in emb.calls[-1])
    with EmbeddedStore(out) as store:
        assert "docs/guide.rst" not in {d.id for d in store.documents()}
        fresh = emb.embed([f"{store.chunk(i).title}\n{store.chunk(i).text}" for i in range(len(store))])
        assert np.allclose(store.vectors, fresh, atol=1e-6)  # reused vectors sit at their chunks' rows


def test_a_crash_while_indexing_leaves_the_previous_index(docs_dir, tmp_path):
    out = tmp_path / "index"
    build_index([docs_dir], out, embedder=HashEmbedder())
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    class Broken(HashEmbedder):
        def embed(self, texts, **kw):
            raise RuntimeError("power cut")

    (docs_dir / "notes.md").write_text("# Changed\n\nnew text\n")
    with pytest.raises(RuntimeError, match="power cut"):
        build_index([docs_dir], out, embedder=Broken())
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".index")]  # no half-written sibling left
    with EmbeddedStore(out) as store:
        assert len(store) > 0


def test_refuses_a_directory_that_is_not_an_index(docs_dir, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an llmkit RAG index"):
        build_index([docs_dir], tmp_path / "mine", embedder=HashEmbedder())
    assert (tmp_path / "mine" / "keep.txt").read_text() == "x"


def test_dense_search_is_the_cosine_ranking(docs_dir, tmp_path):
    emb = HashEmbedder()
    build_index([docs_dir], tmp_path / "index", embedder=emb)
    with EmbeddedStore(tmp_path / "index") as store:
        q = emb.embed(["green tea water"])[0]
        want = np.argsort(-(store.vectors @ q), kind="stable")[:3]
        got = [r for r, _ in store.dense(q, 3)]
        assert sorted(got) == sorted(want.tolist())
        top = store.keyword("molten lava volcanoes", 2)
        assert store.chunk(top[0][0]).doc_id == "docs/paper.pdf"
        assert store.keyword("zzzz qqqq", 3) == []
