"""The RAG stage of ``llmkit speedrun``: index pydocs, answer three questions with citations
(extractively: no generator is needed offline), and the retrieval table on llmkit's pydocs
question set: recall@1/5/10, MRR and latency for dense, BM25 and hybrid retrieval."""

from __future__ import annotations

QUESTIONS = ("How do I parse command-line arguments?", "How can I read a CSV file row by row?", "How do I compute a SHA-256 hash?")
QUICK_MODULES = ("argparse", "csv", "hashlib", "json", "random", "datetime", "heapq", "bisect", "textwrap", "uuid", "base64", "math")


def rag_settings(c) -> dict:
    return {"modules": list(QUICK_MODULES) if c.quick else "all", "max_tokens": 200, "overlap": 40, "k": 5}


def run_rag(ctx) -> dict:
    from llmkit.rag.answer import answer
    from llmkit.rag.eval import evaluate, load_questions
    from llmkit.rag.index import build_index
    from llmkit.rag.ingest import corpus_documents
    from llmkit.rag.retrieve import Retriever

    s = rag_settings(ctx.config)
    docs = corpus_documents("pydocs")
    if s["modules"] != "all":
        docs = [d for d in docs if d.id in s["modules"]]
    out = ctx.out / "rag" / "index"
    ctx.log(f"indexing {len(docs)} pydocs modules (chunking, embedding with all-MiniLM-L6-v2, FAISS + SQLite + BM25)")
    report = build_index(out=out, documents=docs, max_tokens=s["max_tokens"], overlap=s["overlap"], log=ctx.log)
    retriever = Retriever(out)
    answers = [answer(q, retriever, k=s["k"]).to_dict() for q in QUESTIONS]
    indexed = {d.id for d in docs}
    questions = [q for q in load_questions("pydocs") if q["source"] in indexed]
    results = evaluate(retriever, questions)
    return {"settings": s, "index": {"dir": str(out), "summary": report.summary(), "documents": report.documents, "chunks": report.chunks,
            "embed_seconds": report.embed_seconds, "embedded_chunks": report.embedded_chunks}, "answers": answers, "eval": results,
            "questions": len(questions)}


def report_rag(r: dict) -> str:
    from llmkit.rag.eval import format_table

    idx = r["index"]
    rate = f" ({idx['embedded_chunks'] / idx['embed_seconds']:.0f} chunks/s)" if idx["embed_seconds"] > 0 and idx["embedded_chunks"] else ""
    lines = [f"`llmkit rag index` over pydocs: {idx['documents']:,} modules in {idx['chunks']:,} chunks of up to {r['settings']['max_tokens']} "
             f"tokens{rate}, in `{idx['dir']}`. Three questions, answered extractively (the sentences closest to the question, each "
             "cited: no generator needed offline):", ""]
    for a in r["answers"]:
        lines += [f"**{a['question']}**", ""]
        lines += [f"> \u201c{q['text']}\u201d [{q['source']}: {a['sources'][q['source'] - 1]['doc_id']}, line {q['line']}]" for q in a["quotes"]]
        lines.append("")
    lines += [f"Retrieval on llmkit's pydocs question set ({r['questions']} questions a user would ask; a hit when a top-k chunk comes "
              "from the gold module; latency per query on this machine, embedding the question included):", "", format_table(r["eval"]),
              "", f"Try: `llmkit rag ask \"How do I read a gzip file?\" --index {idx['dir']}`."]
    return "\n".join(lines)
