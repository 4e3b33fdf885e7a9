"""``llmkit rag index|ask|eval``: retrieval-augmented generation over your files or pydocs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from llmkit.cli._common import cli_errors, console, err_console, fail

app = typer.Typer(no_args_is_help=True, help="Retrieval-augmented generation: index documents, ask with citations, evaluate retrieval.")


@app.command("index")
@cli_errors
def index_cmd(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="files and directories (.txt .md .rst .html .py .jsonl .pdf); none: --corpus pydocs")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="index directory, or postgresql://user@host/db#name (pgvector); an existing index is updated: only changed files are embedded")] = "runs/index",
    corpus: Annotated[Optional[str], typer.Option("--corpus", help="a built-in corpus to index too: pydocs (the default when no PATH is given), or bbc")] = None,
    embedder: Annotated[str, typer.Option("--embedder", help="minilm (all-MiniLM-L6-v2, pip-shipped) or a backend spec, e.g. openai:http://127.0.0.1:8000/v1#all-MiniLM-L6-v2")] = "minilm",
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="tokens per chunk")] = 200,
    overlap: Annotated[int, typer.Option("--overlap", help="tokens a chunk repeats from the one before")] = 40,
) -> None:
    """Chunk, embed and store documents (FAISS + SQLite + BM25 in one directory)."""
    from llmkit.rag.embed import make_embedder
    from llmkit.rag.eval import bbc_documents
    from llmkit.rag.index import build_index

    docs = bbc_documents() if corpus == "bbc" else None
    report = build_index(paths or (), output, corpus=None if corpus == "bbc" else corpus, documents=docs, embedder=make_embedder(embedder),
                         max_tokens=max_tokens, overlap=overlap, progress=True, log=lambda s: err_console.print(s, highlight=False))
    for s in report.skipped:
        err_console.print(f"skipped {s.path}: {s.reason}", highlight=False, markup=False)
    console.print(report.summary(), highlight=False, soft_wrap=True)


@app.command("ask")
@cli_errors
def ask_cmd(
    question: Annotated[str, typer.Argument(help="the question")],
    index: Annotated[str, typer.Option("--index", help="index directory or postgresql://...#name (llmkit rag index)")] = "runs/index",
    backend: Annotated[Optional[str], typer.Option("--backend", help="generator: llmkit:RUN, hf:DIR, openai:URL#MODEL ...; none: an extractive answer")] = None,
    k: Annotated[int, typer.Option("-k", help="chunks to retrieve")] = 5,
    method: Annotated[str, typer.Option("--method", help="hybrid, dense or bm25")] = "hybrid",
    mmr: Annotated[Optional[float], typer.Option("--mmr", help="MMR lambda in [0, 1] (1 = relevance only) for more diverse sources")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the answer, quotes and sources as JSON")] = False,
) -> None:
    """Answer from the index with numbered citations ([2] = source 2: document and lines)."""
    from llmkit.rag.answer import answer
    from llmkit.rag.retrieve import Retriever

    if k < 1:
        fail("-k must be >= 1")
    gen = None
    if backend:
        from llmkit.backends import open_backend

        gen = open_backend(backend)
    result = answer(question, Retriever(index), k=k, method=method, mmr=mmr, backend=gen, backend_name=backend or "")
    if as_json:
        console.print_json(json.dumps(result.to_dict()))
    else:
        console.print(result.format(), highlight=False, markup=False, soft_wrap=True)


@app.command("eval")
@cli_errors
def eval_cmd(
    questions: Annotated[str, typer.Argument(help='pydocs or bbc (built-in sets), or a JSONL file of {"question", "source"} lines')],
    index: Annotated[str, typer.Option("--index", help="index directory or postgresql://...#name")] = "runs/index",
    as_json: Annotated[bool, typer.Option("--json", help='print {"dense": {"recall@5": ...}, "bm25": {...}, "hybrid": {...}}')] = False,
) -> None:
    """Recall@1/5/10, MRR and latency of dense, BM25 and hybrid retrieval."""
    from llmkit.rag.eval import evaluate, format_table, load_questions
    from llmkit.rag.retrieve import Retriever

    results = evaluate(Retriever(index), load_questions(questions))
    if as_json:
        console.print_json(json.dumps(results))
    else:
        console.print(format_table(results), highlight=False, markup=False, soft_wrap=True)
