"""Answers with citations. The retrieved chunks become numbered sources ``[1] ... [k]``; a
generator (any :mod:`llmkit.backends` backend) is asked to answer from them and cite like [2].
With no generator (the offline default) the answer is extractive: the sentences of the sources
closest to the question (by the index's own embedder), quoted, each with its source number,
document and line."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import numpy as np

from llmkit.rag.retrieve import Hit, Retriever

__all__ = ["Answer", "Source", "answer", "build_prompt", "extractive_answer", "sources_of"]

_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)|[^\n]+", re.MULTILINE)


@dataclass
class Source:
    n: int
    doc_id: str
    title: str
    section: str
    line_start: int
    line_end: int
    score: float
    text: str


@dataclass
class Answer:
    question: str
    text: str
    sources: list[Source]
    mode: str
    """extractive, or the generator's backend spec."""
    quotes: list[dict] = field(default_factory=list)
    """Extractive mode: each quoted sentence with its source number and line."""

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        lines = [self.text, "", "Sources:"]
        lines += [f"[{s.n}] {s.doc_id}, lines {s.line_start}-{s.line_end}" + (f" ({s.section})" if s.section else "") for s in self.sources]
        return "\n".join(lines)


def sources_of(hits: list[Hit]) -> list[Source]:
    return [Source(i, h.chunk.doc_id, h.chunk.title, h.chunk.section, h.chunk.line_start, h.chunk.line_end, h.score, h.chunk.text)
            for i, h in enumerate(hits, 1)]


def build_prompt(question: str, hits: list[Hit]) -> str:
    """The generator's prompt: the numbered sources, then the question."""
    parts = ["Answer the question using only the numbered sources below. After each statement, cite the source it comes "
             "from like [2]. If the sources do not answer it, say so.", ""]
    for s in sources_of(hits):
        parts += [f"[{s.n}] {s.doc_id}, lines {s.line_start}-{s.line_end}:", s.text.strip(), ""]
    parts += [f"Question: {question}", "Answer:"]
    return "\n".join(parts)


def extractive_answer(question: str, hits: list[Hit], embedder, n_sentences: int = 3) -> Answer:
    """The ``n_sentences`` sentences of the sources most similar to the question, in order of
    similarity, each quoted with its citation."""
    sources = sources_of(hits)
    candidates = []  # (source n, line, sentence)
    for s in sources:
        for m in _SENTENCE.finditer(s.text):
            sentence = " ".join(re.sub(r"^[\s|>*-]+", "", m.group(0)).split())  # no pydoc "|" rails, quote marks, bullets
            if len(sentence) >= 12 and re.search(r"[A-Za-z]{3}", sentence):
                candidates.append((s.n, s.line_start + s.text.count("\n", 0, m.start()), sentence))
    if not candidates:
        return Answer(question, "No passage of the index answers this.", sources, "extractive")
    unique = list({c[2]: c for c in candidates}.values())
    vecs = embedder.embed([question] + [c[2] for c in unique])
    sims = vecs[1:] @ vecs[0]
    order = np.argsort(-sims)[:n_sentences]
    quotes = [{"source": unique[i][0], "line": unique[i][1], "text": unique[i][2], "similarity": float(sims[i])} for i in order]
    text = "\n".join(f"\u201c{q['text']}\u201d [{q['source']}]" for q in quotes)
    return Answer(question, text, sources, "extractive", quotes)


def answer(question: str, retriever: Retriever, *, k: int = 5, method: str = "hybrid", mmr: float | None = None, backend=None,
           backend_name: str = "", max_new_tokens: int = 200, n_sentences: int = 3) -> Answer:
    """Retrieve ``k`` chunks and answer from them: with ``backend`` (an llmkit backend) by
    generation, else extractively."""
    hits = retriever.retrieve(question, k, method, mmr)
    if backend is None:
        return extractive_answer(question, hits, retriever.embedder, n_sentences)
    prompt = build_prompt(question, hits)
    try:
        text = backend.chat([{"role": "user", "content": prompt}], max_new_tokens=max_new_tokens, temperature=0.0)
    except NotImplementedError:
        text = backend.generate(prompt, max_new_tokens=max_new_tokens, temperature=0.0)
    return Answer(question, text.strip(), sources_of(hits), backend_name or type(backend).__name__)
