"""Token classification (NER) and extractive question answering with the Hugging Face stack,
the two heads ``llmkit hf finetune --task ner|qa`` trains (the run directory is the same as
for classification: model/, adapter/, report.json; see :mod:`llmkit.hf.finetune`).

- NER: rows ``{"tokens": [...words], "ner_tags": ["B-PER", "O", ...]}`` (BIO tags as names, or
  integers with a ``ClassLabel`` feature as hub data sets have them). Words are split into
  sub-word tokens; a word's tag goes to its first token, the others are ignored (-100) in the
  loss and the scores. Scored by entity: an entity counts when its type and word span are
  exactly right (CoNLL's rule), with precision, recall and F1 over all entities and per type.
- QA: SQuAD-layout rows ``{"question", "context", "answers": {"text": [...], "answer_start":
  [...]}}``. A context longer than the window is cut into windows that overlap by ``stride``
  tokens (truncation with overlap); a window that does not hold the whole answer is trained to
  point at [CLS]. The answer of an example is the best span over all its windows (start logit
  + end logit, end not before start, at most ``max_answer_tokens``). Scored by SQuAD's exact
  match and token F1 on normalised text (lower case, no punctuation, no articles).

Built-in data (made here, see :mod:`llmkit.hf.taskdata`): ``bbc-ner`` (spaCy silver labels on
BBC News sentences) and ``pydocs-qa`` (questions on the standard library's documentation).
"""

from __future__ import annotations

import os
import random
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from llmkit.finetune.data import LabelledDataError
from llmkit.hf.finetune import (
    HFFinetuneConfig,
    HFFinetuneResult,
    _start,
    _tokenizer,
    _with_labels,
    adapt,
)
from llmkit.hf.quiet import quiet_hf
from llmkit.hf.trainer import merge_lora, save_run, train_with_trainer, trainable_and_total

__all__ = [
    "BUILTIN_NER", "BUILTIN_QA", "entities", "finetune_ner", "finetune_qa", "load_ner_rows", "load_qa_rows", "ner_scores", "squad_scores",
]

BUILTIN_NER = {"bbc-ner": "BBC News sentences with spaCy's silver CoNLL tags (PER, ORG, LOC, MISC), made here"}
BUILTIN_QA = {"pydocs-qa": "SQuAD-style questions on the Python standard library's documentation, made here"}
DEFAULT_ROWS = 2000
"""Rows a built-in data set makes unless told (``--limit``)."""


# -- data -------------------------------------------------------------------------------------------
def _read_rows(source: str | os.PathLike, what: str) -> list[dict]:
    """Rows of a local JSON/JSONL/parquet file or a hub data set's train split, through
    ``datasets.load_dataset``; ClassLabel integers become their names."""
    import tempfile

    import datasets

    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    builders = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
    local = suffix in (*builders, ".csv", ".tsv", ".txt") or path.exists()
    if local and not path.is_file():
        raise LabelledDataError(f"{source}: no such file")
    if local and suffix not in builders:
        raise LabelledDataError(f"{source}: unsupported file type {suffix or '(none)'} for {what}; use .json, .jsonl or .parquet")
    with quiet_hf(), tempfile.TemporaryDirectory(prefix="llmkit-datasets-") as cache:
        try:
            if local:
                ds = datasets.load_dataset(builders[suffix], data_files=str(path), split="train", cache_dir=cache, keep_in_memory=True)
            else:
                ds = datasets.load_dataset(str(source), split="train")
        except Exception as e:  # datasets / pyarrow raise many kinds
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LabelledDataError(f"{source}: cannot read this {'file' if local else 'dataset'}: {first}") from None
        names = {}
        for col, feat in ds.features.items():
            inner = getattr(feat, "feature", None)
            if isinstance(inner, datasets.ClassLabel):
                names[col] = inner.names
        rows = ds.to_list()
    for col, classes in names.items():
        for r in rows:
            r[col] = [classes[i] for i in r[col]]
    return rows


def load_ner_rows(source: str | os.PathLike, *, tokens_column: str = "tokens", tags_column: str = "ner_tags", limit: int | None = None,
                  seed: int = 0) -> list[dict]:
    """``[{"tokens", "ner_tags"}]`` from ``bbc-ner`` (made here) or a file / hub data set,
    checked: every row has as many tags as words and every tag is O, B-TYPE or I-TYPE."""
    if str(source) in BUILTIN_NER:
        from llmkit.hf.taskdata import silver_ner

        return silver_ner(limit or DEFAULT_ROWS, seed)
    rows = _read_rows(source, "NER")
    out = []
    for i, r in enumerate(rows, 1):
        if tokens_column not in r or tags_column not in r:
            raise LabelledDataError(f"{source}: no column {tokens_column!r} or {tags_column!r} (columns: {', '.join(r)}); choose with --text-column / --label-column")
        words, tags = r[tokens_column], r[tags_column]
        if not isinstance(words, list) or not isinstance(tags, list) or not words:
            raise LabelledDataError(f"{source} row {i}: {tokens_column} and {tags_column} must be non-empty lists")
        if len(words) != len(tags):
            raise LabelledDataError(f"{source} row {i}: {len(words)} words but {len(tags)} tags")
        bad = next((t for t in tags if not (t == "O" or (isinstance(t, str) and re.fullmatch(r"[BI]-\S+", t)))), None)
        if bad is not None:
            raise LabelledDataError(f"{source} row {i}: tag {bad!r} is not O, B-TYPE or I-TYPE")
        out.append({"tokens": [str(w) for w in words], "ner_tags": list(tags)})
    if not out:
        raise LabelledDataError(f"{source}: no rows")
    return _limit(out, limit, seed)


def load_qa_rows(source: str | os.PathLike, *, limit: int | None = None, seed: int = 0) -> list[dict]:
    """SQuAD-layout rows from ``pydocs-qa`` (made here) or a file / hub data set, checked:
    each answer is found at its ``answer_start`` in the context."""
    if str(source) in BUILTIN_QA:
        from llmkit.hf.taskdata import pydocs_qa

        return pydocs_qa(limit or DEFAULT_ROWS, seed)
    rows = _read_rows(source, "QA")
    out = []
    for i, r in enumerate(rows, 1):
        missing = [c for c in ("question", "context", "answers") if c not in r]
        if missing:
            raise LabelledDataError(f"{source} row {i}: no {missing[0]!r} (SQuAD layout: question, context, answers: {{text, answer_start}})")
        answers = r["answers"] or {}
        texts, starts = answers.get("text") or [], answers.get("answer_start") or []
        if not texts or len(texts) != len(starts):
            raise LabelledDataError(f"{source} row {i}: answers needs as many text as answer_start entries, at least one")
        for text, start in zip(texts, starts):
            if r["context"][start : start + len(text)] != text:
                raise LabelledDataError(f"{source} row {i}: answer {text!r} is not at character {start} of the context")
        out.append({"id": str(r.get("id", i)), "question": r["question"], "context": r["context"], "answers": {"text": list(texts), "answer_start": list(starts)}})
    if not out:
        raise LabelledDataError(f"{source}: no rows")
    return _limit(out, limit, seed)


def _limit(rows: list[dict], limit: int | None, seed: int) -> list[dict]:
    if limit is None or limit >= len(rows):
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in keep]


def _split(rows: list[dict], fractions: Sequence[float], seed: int) -> tuple[list[dict], list[dict], list[dict]]:
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_val, n_test = round(len(rows) * fractions[1]), round(len(rows) * fractions[2])
    if len(rows) - n_val - n_test < 1 or n_val < 1 or n_test < 1:
        raise ValueError(f"too few rows to split: {len(rows)}; give more data (or a larger --limit)")
    parts = order[: len(rows) - n_val - n_test], order[len(rows) - n_val - n_test : len(rows) - n_test], order[len(rows) - n_test :]
    return tuple([rows[i] for i in sorted(p)] for p in parts)  # type: ignore[return-value]


# -- scores -----------------------------------------------------------------------------------------
def entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """``{(type, first word, last word + 1)}`` of a BIO sequence. An I- tag that does not
    continue an entity of its type starts one (as conlleval and seqeval read it)."""
    found, kind, start = set(), None, 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, t = tag.partition("-")
        if kind is not None and (prefix != "I" or t != kind):
            found.add((kind, start, i))
            kind = None
        if prefix == "B" or (prefix == "I" and kind is None):
            kind, start = t, i
    return found


def ner_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """Entity precision / recall / F1 (micro over all entities, and per type) and token accuracy."""
    if len(gold) != len(pred) or any(len(g) != len(p) for g, p in zip(gold, pred)):
        raise ValueError("gold and predicted tag sequences must have the same lengths")
    tp, n_gold, n_pred = Counter(), Counter(), Counter()
    for g, p in zip(gold, pred):
        ge, pe = entities(g), entities(p)
        for kind, *_ in ge:
            n_gold[kind] += 1
        for kind, *_ in pe:
            n_pred[kind] += 1
        for kind, *_ in ge & pe:
            tp[kind] += 1

    def prf(t: int, ng: int, np_: int) -> dict:
        precision, recall = (t / np_ if np_ else 0.0), (t / ng if ng else 0.0)
        return {"precision": precision, "recall": recall, "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0, "support": ng}

    total = prf(sum(tp.values()), sum(n_gold.values()), sum(n_pred.values()))
    words = sum(len(g) for g in gold)
    return {**{k: total[k] for k in ("precision", "recall", "f1")}, "token_accuracy": sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p)) / max(1, words),
            "per_type": {k: prf(tp[k], n_gold[k], n_pred[k]) for k in sorted(set(n_gold) | set(n_pred))}}


def _normalise(text: str) -> list[str]:
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return re.sub(r"\b(a|an|the)\b", " ", text).split()


def squad_scores(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict:
    """SQuAD v1.1's exact match and token F1 (each prediction against its best reference)."""
    if len(predictions) != len(references):
        raise ValueError("one list of reference answers per prediction")

    def f1(pred: str, ref: str) -> float:
        p, r = _normalise(pred), _normalise(ref)
        common = sum((Counter(p) & Counter(r)).values())
        if not p or not r:
            return float(p == r)
        if not common:
            return 0.0
        precision, recall = common / len(p), common / len(r)
        return 2 * precision * recall / (precision + recall)

    em = [max(float(_normalise(p) == _normalise(r)) for r in refs) for p, refs in zip(predictions, references)]
    f = [max(f1(p, r) for r in refs) for p, refs in zip(predictions, references)]
    n = max(1, len(predictions))
    return {"exact_match": sum(em) / n, "f1": sum(f) / n}


def _fast_tokenizer(model_path: str, cfg: HFFinetuneConfig, why: str):
    tok = _tokenizer(model_path)
    if not tok.is_fast:
        raise ValueError(f"{cfg.model} has no fast (Rust) tokenizer; {why}")
    return tok


# -- NER ---------------------------------------------------------------------------------------------
def _tag_set(rows: Sequence[dict]) -> list[str]:
    kinds = sorted({t[2:] for r in rows for t in r["ner_tags"] if t != "O"})
    return ["O"] + [f"{p}-{k}" for k in kinds for p in "BI"]


def _ner_features(tok, rows: Sequence[dict], tag_id: dict[str, int], max_length: int):
    from datasets import Dataset

    enc = tok([r["tokens"] for r in rows], is_split_into_words=True, truncation=True, max_length=max_length)
    labels = []
    for i, r in enumerate(rows):
        previous, row = None, []
        for w in enc.word_ids(i):
            row.append(-100 if w is None or w == previous else tag_id[r["ner_tags"][w]])  # a word's first token carries its tag
            previous = w
        labels.append(row)
    return Dataset.from_dict({**{k: v for k, v in enc.items()}, "labels": labels})


def _ner_predict(trainer, features, rows: Sequence[dict], tags: Sequence[str]) -> tuple[list[list[str]], list[list[str]]]:
    """(gold, predicted) word tags, for the words inside the window (a truncated sentence is
    scored on its first words)."""
    out = trainer.predict(features)
    preds = out.predictions[0] if isinstance(out.predictions, tuple) else out.predictions
    gold, pred = [], []
    for r, p, lab in zip(rows, preds.argmax(-1), out.label_ids):
        kept = [(tags[int(a)]) for a, b in zip(p, lab) if b != -100]
        gold.append(list(r["ner_tags"][: len(kept)]))
        pred.append(kept)
    return gold, pred


def finetune_ner(data: str | os.PathLike, out_dir: str | os.PathLike | None, config: HFFinetuneConfig | None = None, *,
                 tokens_column: str = "tokens", tags_column: str = "ner_tags", limit: int | None = None, overwrite: bool = False,
                 log: Callable[[str], None] = print) -> HFFinetuneResult:
    """Fine-tune ``config.model`` for token classification on ``data`` (``bbc-ner`` or a file),
    score entities on the test split, write the run directory unless ``out_dir`` is None."""
    import torch
    from transformers import DataCollatorForTokenClassification

    cfg = config or HFFinetuneConfig(task="ner")
    model_path, device, protect = _start(cfg, data, out_dir, overwrite)
    rows = load_ner_rows(data, tokens_column=tokens_column, tags_column=tags_column, limit=limit, seed=cfg.seed)
    train, val, test = _split(rows, cfg.split, cfg.seed)
    tags = _tag_set(rows)
    tag_id = {t: i for i, t in enumerate(tags)}
    history: list[dict] = []
    with quiet_hf():
        tok = _fast_tokenizer(model_path, cfg, "NER needs one to map tokens to words")
        torch.manual_seed(cfg.seed)
        model = _with_labels(model_path, tags, tok, "ner")
        log(f"{cfg.model} ({type(model).__name__}) with a fresh {len(tags)}-tag head ({', '.join(tags)}); "
            f"{len(train)} train / {len(val)} val / {len(test)} test sentences")
        model, line = adapt(model, cfg, "TOKEN_CLS", log)
        trainer, steps, seconds, peak = train_with_trainer(model, tok, cfg, device, _ner_features(tok, train, tag_id, cfg.max_length),
                                                           DataCollatorForTokenClassification(tok), log, history)
        val_scores = ner_scores(*_ner_predict(trainer, _ner_features(tok, val, tag_id, cfg.max_length), val, tags))
        test_scores = ner_scores(*_ner_predict(trainer, _ner_features(tok, test, tag_id, cfg.max_length), test, tags))
        log(f"test entity F1 {test_scores['f1']:.3f} (precision {test_scores['precision']:.3f}, recall {test_scores['recall']:.3f}), "
            f"token accuracy {test_scores['token_accuracy']:.3f} (val F1 {val_scores['f1']:.3f}); {seconds:.1f} s")
        probe = tok([r["tokens"] for r in test[:16]], is_split_into_words=True, truncation=True, max_length=cfg.max_length, padding=True, return_tensors="pt")
        merged, diff = merge_lora(model, probe, log) if cfg.peft == "lora" else (model, None)
        result = HFFinetuneResult("ner", test_scores, val_scores, line, *trainable_and_total(model), steps, seconds, peak,
                                  {"train": len(train), "val": len(val), "test": len(test)}, tags, None, diff, history, [], merged.cpu().eval(), tok)
        if out_dir is not None:
            save_run(Path(out_dir), result, model if cfg.peft == "lora" else None, {**asdict(cfg), "model_path": model_path, "data": str(data)}, overwrite, protect)
    return result


# -- QA ----------------------------------------------------------------------------------------------
def _qa_windows(tok, rows: Sequence[dict], cfg: HFFinetuneConfig, *, train: bool):
    """Tokenised (question, context window) features; for training with start/end token
    positions (0, [CLS], where the window does not hold the whole answer), else with each
    feature's example index and context offsets."""
    from datasets import Dataset

    enc = tok([r["question"].strip() for r in rows], [r["context"] for r in rows], truncation="only_second", max_length=cfg.max_length,
              stride=cfg.stride, return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length")
    example = enc.pop("overflow_to_sample_mapping")
    offsets = enc.pop("offset_mapping")
    cols = {k: v for k, v in enc.items()}
    if not train:
        context_offsets = [[o if s == 1 else None for o, s in zip(offs, enc.sequence_ids(i))] for i, offs in enumerate(offsets)]
        return Dataset.from_dict(cols), context_offsets, list(example)
    starts, ends = [], []
    for i, offs in enumerate(offsets):
        r = rows[example[i]]
        a = r["answers"]["answer_start"][0]
        b = a + len(r["answers"]["text"][0])
        seq = enc.sequence_ids(i)
        ctx = [k for k, s in enumerate(seq) if s == 1]
        if not ctx or offs[ctx[0]][0] > a or offs[ctx[-1]][1] < b:
            starts.append(0)
            ends.append(0)
            continue
        starts.append(next(k for k in ctx if offs[k][1] > a))
        ends.append(next(k for k in reversed(ctx) if offs[k][0] < b))
    cols["start_positions"], cols["end_positions"] = starts, ends
    return Dataset.from_dict(cols)


def _qa_answers(trainer, tok, rows: Sequence[dict], cfg: HFFinetuneConfig) -> list[str]:
    """The best span of each example over its windows (n-best of 20 starts x 20 ends)."""
    import numpy as np

    features, offsets, example = _qa_windows(tok, rows, cfg, train=False)
    start_logits, end_logits = trainer.predict(features).predictions[:2]
    best: dict[int, tuple[float, str]] = {}
    for f, (sl, el) in enumerate(zip(start_logits, end_logits)):
        offs, r = offsets[f], rows[example[f]]
        for s in np.argsort(sl)[-20:]:
            for e in np.argsort(el)[-20:]:
                if offs[s] is None or offs[e] is None or e < s or e - s + 1 > cfg.max_answer_tokens:
                    continue
                score = float(sl[s] + el[e])
                if score > best.get(example[f], (-np.inf, ""))[0]:
                    best[example[f]] = (score, r["context"][offs[s][0] : offs[e][1]])
    return [best.get(i, (0.0, ""))[1] for i in range(len(rows))]


def finetune_qa(data: str | os.PathLike, out_dir: str | os.PathLike | None, config: HFFinetuneConfig | None = None, *,
                limit: int | None = None, overwrite: bool = False, log: Callable[[str], None] = print) -> HFFinetuneResult:
    """Fine-tune ``config.model`` for extractive QA on ``data`` (``pydocs-qa`` or a SQuAD-layout
    file), score exact match and F1 on the test split, write the run directory unless
    ``out_dir`` is None."""
    import torch
    from transformers import default_data_collator

    cfg = config or HFFinetuneConfig(task="qa", max_length=256)
    model_path, device, protect = _start(cfg, data, out_dir, overwrite)
    rows = load_qa_rows(data, limit=limit, seed=cfg.seed)
    train, val, test = _split(rows, cfg.split, cfg.seed)
    history: list[dict] = []
    with quiet_hf():
        tok = _fast_tokenizer(model_path, cfg, "QA needs one for character offsets")
        torch.manual_seed(cfg.seed)
        model = _with_labels(model_path, [], tok, "qa")
        features = _qa_windows(tok, train, cfg, train=True)
        log(f"{cfg.model} ({type(model).__name__}) with a fresh span head; {len(train)} train / {len(val)} val / {len(test)} test questions "
            f"({len(features)} training windows of {cfg.max_length} tokens, overlap {cfg.stride})")
        model, line = adapt(model, cfg, "QUESTION_ANS", log)
        trainer, steps, seconds, peak = train_with_trainer(model, tok, cfg, device, features, default_data_collator, log, history)
        val_scores = squad_scores(_qa_answers(trainer, tok, val, cfg), [r["answers"]["text"] for r in val])
        predicted = _qa_answers(trainer, tok, test, cfg)
        test_scores = squad_scores(predicted, [r["answers"]["text"] for r in test])
        log(f"test exact match {test_scores['exact_match']:.3f}, F1 {test_scores['f1']:.3f} (val exact match {val_scores['exact_match']:.3f}); {seconds:.1f} s")
        probe = tok([r["question"] for r in test[:8]], [r["context"] for r in test[:8]], truncation="only_second", max_length=cfg.max_length,
                    padding=True, return_tensors="pt")
        merged, diff = merge_lora(model, probe, log) if cfg.peft == "lora" else (model, None)
        examples = [{"question": r["question"], "gold": r["answers"]["text"][0], "predicted": p} for r, p in zip(test[:5], predicted)]
        result = HFFinetuneResult("qa", {**test_scores, "examples": examples}, val_scores, line, *trainable_and_total(model), steps, seconds, peak,
                                  {"train": len(train), "val": len(val), "test": len(test)}, [], None, diff, history, [], merged.cpu().eval(), tok)
        if out_dir is not None:
            save_run(Path(out_dir), result, model if cfg.peft == "lora" else None, {**asdict(cfg), "model_path": model_path, "data": str(data)}, overwrite, protect)
    return result
