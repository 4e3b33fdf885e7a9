"""RAG benchmark: indexing throughput beside the embedder alone, query latency on the full
pydocs index, index size on disk.

- Indexing: ``build_index`` over the first N pydocs modules (chunking, token counting, embedding,
  writing FAISS + SQLite + BM25) in chunks/s, beside all-MiniLM-L6-v2 embedding the same chunk
  texts alone (sentence-transformers, the same batch size): the embedder is the bound, so the
  ratio says what the rest costs.
- Query latency: each of llmkit's 70 pydocs questions through ``Retriever.rows`` (the question's
  embedding included, no generation), per method, p50 and p95 in milliseconds, on the full
  pydocs index (built here, or given with --index). Goal: hybrid p50 <= 30 ms.
- Size: the index directory's bytes, and per chunk.

    .venv/bin/python benchmarks/rag.py                          # builds the full index first (minutes)
    .venv/bin/python benchmarks/rag.py --index runs/index       # reuse a pydocs index
    .venv/bin/python benchmarks/rag.py --quick                  # smoke run: 8 modules, latency on them
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, print_table, verdict, write_results  # noqa: E402

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "rag.json"
GOAL_P50_MS = 30.0


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--index", type=Path, help="an existing pydocs index to measure queries on")
    ap.add_argument("--modules", type=int, default=30, help="pydocs modules to time indexing on")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = ap.parse_args()
    import torch

    from llmkit.rag.chunk import chunk_document
    from llmkit.rag.embed import MiniLMEmbedder
    from llmkit.rag.eval import evaluate, load_questions
    from llmkit.rag.index import build_index
    from llmkit.rag.ingest import corpus_documents
    from llmkit.rag.retrieve import Retriever

    info = machine_info(("llmkit", "torch", "sentence-transformers", "faiss-cpu", "bm25s"), torch_threads=torch.get_num_threads())
    print(info)
    embedder = MiniLMEmbedder()
    docs = corpus_documents("pydocs")
    subset = docs[: 8 if args.quick else args.modules]
    results: dict = {"machine": info}
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        report = build_index(out=Path(d) / "sub", documents=subset, embedder=embedder)
        index_s = time.perf_counter() - t0
        texts = [f"{c.title}\n{c.text}" for doc in subset for c in chunk_document(doc, embedder.count_tokens)]
        t0 = time.perf_counter()
        embedder.embed(texts)
        embed_s = time.perf_counter() - t0
        results["indexing"] = {"modules": len(subset), "chunks": report.chunks, "index_seconds": index_s, "embed_only_seconds": embed_s,
                               "index_chunks_per_s": report.chunks / index_s, "embed_chunks_per_s": len(texts) / embed_s}
        if args.index is None:
            index = Path(d) / ("sub" if args.quick else "full")
            if not args.quick:
                print("building the full pydocs index (all modules) ...", flush=True)
                build_index(out=index, embedder=embedder)
        else:
            index = args.index
        retriever = Retriever(index, embedder)
        indexed = {doc.id for doc in retriever.store.documents()}
        questions = [q for q in load_questions("pydocs") if q["source"] in indexed]
        ev = evaluate(retriever, questions)
        size = dir_bytes(index)
        results["queries"] = {"index_chunks": len(retriever.store), "questions": len(questions), **ev}
        results["size"] = {"bytes": size, "bytes_per_chunk": size / max(1, len(retriever.store))}
    ix = results["indexing"]
    print_table(["indexing", "chunks", "seconds", "chunks/s"], [
        ["build_index (chunk + embed + store)", str(ix["chunks"]), f"{ix['index_seconds']:.1f}", f"{ix['index_chunks_per_s']:.1f}"],
        ["embedder alone (same texts)", str(ix["chunks"]), f"{ix['embed_only_seconds']:.1f}", f"{ix['embed_chunks_per_s']:.1f}"],
    ])
    print(f"indexing runs at {ix['index_chunks_per_s'] / ix['embed_chunks_per_s']:.2f}x the embedder's own speed")
    q = results["queries"]
    print_table(["method", "recall@5", "p50 ms", "p95 ms"], [[m, f"{q[m]['recall@5']:.3f}", f"{q[m]['p50_ms']:.1f}", f"{q[m]['p95_ms']:.1f}"]
                                                          for m in ("dense", "bm25", "hybrid")])
    p50 = q["hybrid"]["p50_ms"]
    print(f"index: {q['index_chunks']:,} chunks, {results['size']['bytes'] / 2**20:.1f} MiB ({results['size']['bytes_per_chunk'] / 1024:.1f} KiB/chunk)")
    print(f"hybrid p50 {p50:.1f} ms (goal <= {GOAL_P50_MS:g} ms, generation excluded): {verdict(p50, GOAL_P50_MS, higher_is_better=False)}")
    write_results(args.json, results)


if __name__ == "__main__":
    main()
