"""Retrieval, answers with citations, evaluation and the ``llmkit rag`` commands, on a small
pydocs index embedded with all-MiniLM-L6-v2.

Outside truths: the documents' own lines (every quote is found at the line its citation
names), hand-worked reciprocal-rank fusion, the plain ranking for MMR with lambda 1, the
questions' gold modules."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from llmkit.cli.rag import app as rag_app
from llmkit.rag.answer import answer, build_prompt
from llmkit.rag.eval import evaluate, format_table, load_questions
from llmkit.rag.index import build_index
from llmkit.rag.ingest import corpus_documents
from llmkit.rag.retrieve import Retriever, rrf

MODULES = ("json", "csv", "random", "bisect", "heapq", "base64", "textwrap", "uuid")


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    out = tmp_path_factory.mktemp("rag") / "index"
    docs = [d for d in corpus_documents("pydocs") if d.id in MODULES]
    build_index(out=out, documents=docs)
    return out, {d.id: d for d in docs}


@pytest.fixture(scope="module")
def retriever(index):
    return Retriever(index[0])


def test_rrf_by_hand():
    # row 7 is 1st and 2nd: 1/61 + 1/62; row 3 is 2nd and 1st: the same; row 9 is 3rd once: 1/63
    fused = rrf([[7, 3, 9], [3, 7]])
    assert [r for r, _ in fused] == [3, 7, 9]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62) and fused[2][1] == pytest.approx(1 / 63)


@pytest.mark.parametrize("question, module", [
    ("How do I serialize a Python object to a JSON string?", "json"),
    ("read rows from a comma separated values file", "csv"),
    ("keep a list sorted while inserting items", "bisect"),
    ("generate a universally unique identifier", "uuid"),
])
@pytest.mark.parametrize("method", ["dense", "bm25", "hybrid"])
def test_each_method_finds_the_module(retriever, question, module, method):
    hits = retriever.retrieve(question, 5, method)
    assert module in [h.chunk.doc_id for h in hits]


def test_mmr_with_lambda_one_is_the_plain_ranking_and_lower_lambda_diversifies(retriever):
    q = "random numbers"
    plain = [h.row for h in retriever.retrieve(q, 5, "dense")]
    assert [h.row for h in retriever.retrieve(q, 5, "dense", mmr=1.0)] == plain
    diverse = retriever.retrieve(q, 5, "dense", mmr=0.3)
    v = retriever.store.vectors

    def mean_similarity(rows):
        sims = v[rows] @ v[rows].T
        return (sims.sum() - len(rows)) / (len(rows) * (len(rows) - 1))

    assert mean_similarity([h.row for h in diverse]) < mean_similarity(plain)


def test_extractive_answer_quotes_cited_lines(retriever, index):
    _, docs = index
    a = answer("How do I shuffle a list in place?", retriever, k=5)
    assert a.mode == "extractive" and a.quotes and a.sources
    for q in a.quotes:
        src = a.sources[q["source"] - 1]
        assert f"[{q['source']}]" in a.text
        doc_lines = docs[src.doc_id].text.split("\n")
        window = " ".join(" ".join(doc_lines[q["line"] - 1 : q["line"] + 3]).split())
        assert q["text"][:30] in window  # the quote is where its citation says
    assert "random" in [s.doc_id for s in a.sources]


def test_a_generator_gets_numbered_sources(retriever):
    class Echo:
        def __init__(self):
            self.prompts = []

        def chat(self, messages, **kw):
            self.prompts.append(messages[0]["content"])
            return "It uses json.dumps [1]."

    gen = Echo()
    a = answer("How do I write JSON?", retriever, k=3, backend=gen, backend_name="echo")
    assert a.text == "It uses json.dumps [1]." and a.mode == "echo" and len(a.sources) == 3
    prompt = gen.prompts[0]
    assert prompt == build_prompt("How do I write JSON?", retriever.retrieve("How do I write JSON?", 3))
    assert "[1] " in prompt and "[3] " in prompt and prompt.rstrip().endswith("Answer:")


def test_evaluate_reports_recall_mrr_and_latency(retriever, tmp_path):
    qa = tmp_path / "qa.jsonl"
    rows = [{"question": "How do I encode binary data as base64 text?", "source": "base64"},
            {"question": "How do I wrap long text to a fixed line width?", "source": "textwrap"},
            {"question": "How do I get the smallest items from a collection with a heap?", "source": "heapq"}]
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = evaluate(retriever, load_questions(qa))
    assert set(res) == {"dense", "bm25", "hybrid"}
    for r in res.values():
        assert 0 <= r["recall@1"] <= r["recall@5"] <= r["recall@10"] <= 1 and r["recall@1"] <= r["mrr"] <= 1
        assert r["p95_ms"] >= r["p50_ms"] > 0 and r["questions"] == 3
    assert res["hybrid"]["recall@5"] == 1.0
    assert "| hybrid |" in format_table(res)
    with pytest.raises(ValueError, match="not in the index"):
        evaluate(retriever, [{"question": "x", "source": "zipfile"}])


def test_the_shipped_pydocs_questions_name_real_modules():
    from llmkit.data.corpora import load_corpus

    questions = load_questions("pydocs")
    modules = {d.id for d in load_corpus("pydocs")}
    assert len(questions) >= 60 and all(q["source"] in modules for q in questions)


def test_cli_ask_and_eval(index, tmp_path):
    out, _ = index
    r = CliRunner().invoke(rag_app, ["ask", "How do I dedent a block of text?", "--index", str(out), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["mode"] == "extractive" and data["sources"][0]["doc_id"] in {"textwrap"} | set(MODULES)
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "heap queue algorithm", "source": "heapq"}) + "\n")
    r = CliRunner().invoke(rag_app, ["eval", str(qa), "--index", str(out), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert set(res) == {"dense", "bm25", "hybrid"} and set(res["hybrid"]) >= {"recall@1", "recall@5", "recall@10", "mrr", "p50_ms"}
    bad = CliRunner().invoke(rag_app, ["ask", "x", "--index", str(tmp_path / "nope")])
    assert bad.exit_code != 0 and "not an llmkit RAG index" in bad.output


def test_cli_index_lists_skipped_files(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Tea\n\nGreen tea steeps for two minutes.\n")
    (docs / "b.bin").write_bytes(b"\x00")
    r = CliRunner().invoke(rag_app, ["index", str(docs), "-o", str(tmp_path / "idx")])
    assert r.exit_code == 0, r.output
    assert "skipped" in r.output and "b.bin" in r.output and "1 documents" in r.output


def test_the_server_answers_from_the_index(index, tmp_path):
    import sys

    import httpx

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent.parent / "serve"))
    from serve_testutils import ServerThread, tiny_run

    from llmkit.serve.app import create_app
    from llmkit.serve.models import load_served_model

    out, _ = index
    model = load_served_model(tiny_run(tmp_path / "gen", context_length=2048), device="cpu", max_batch=2)
    short = load_served_model(tiny_run(tmp_path / "short"), device="cpu", max_batch=1)  # a 64-token context
    with ServerThread(create_app([model, short], rag_index=out)) as server:
        r = httpx.post(server.url + "/v1/rag", json={"question": "How do I shuffle a list in place?", "k": 4}, timeout=60)
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["mode"] == "extractive" and len(data["sources"]) == 4 and data["quotes"]
        r = httpx.post(server.url + "/v1/rag", json={"question": "How do I shuffle a list?", "k": 2, "model": "gen", "max_tokens": 5}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["mode"] == "gen" and r.json()["usage"]["completion_tokens"] <= 5 and len(r.json()["sources"]) == 2
        too_long = httpx.post(server.url + "/v1/rag", json={"question": "How do I shuffle a list?", "model": "short"}, timeout=60)
        assert too_long.status_code == 400 and "context window is 64 tokens" in too_long.json()["error"]["message"]
        for body, status in (({"question": ""}, 400), ({"question": "x", "method": "magic"}, 400), ({"question": "x", "model": "nope"}, 404)):
            bad = httpx.post(server.url + "/v1/rag", json=body, timeout=60)
            assert bad.status_code == status and "error" in bad.json()
    with ServerThread(create_app([model])) as server:
        assert httpx.post(server.url + "/v1/rag", json={"question": "x"}).status_code == 404
