"""Classifier run directories: save, check and load them, and use them.

A classifier run directory holds:

    classifier.json       the ClassifierSpec (backbone, classes, pooling, method, ...), id2label/label2id, test metrics
    adapter_config.json   (lora) PEFT's layout: LoRA on the backbone, the head under modules_to_save
    adapter_model.safetensors
    model.safetensors     (head, last-k, full) every weight of the classifier
    tokenizer.tiktoken …  the tokenizer files
    metrics.jsonl         training loss per logged step, validation accuracy at each evaluation
    report.json           accuracy, macro-F1, per-class scores, confusion matrix, parameters, time, memory
    confusion.png         the test confusion matrix

A LoRA run stores only what it trained; it names the pre-trained model it adapts (``base``
in classifier.json, ``base_model_name_or_path`` in adapter_config.json) with a checksum of its
weights, and refuses to load onto a base that has changed or gone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from llmkit._io import atomic_write_text, atomic_write_with, read_json, staged_dir
from llmkit.finetune.classifier import ClassifierSpec, SequenceClassifier, pipeline_output, predict_proba
from llmkit.models.gpt import with_qkv_layout
from llmkit.models.lora_files import load_adapter, save_adapter
from llmkit.tokenizer import Tokenizer

SPEC_FILE = "classifier.json"
WEIGHTS_FILE = "model.safetensors"


def weights_sha256(model_dir: str | os.PathLike) -> str:
    """SHA-256 of a model directory's ``model.safetensors`` (read in 1 MiB chunks)."""
    import hashlib

    h = hashlib.sha256()
    with open(Path(model_dir) / WEIGHTS_FILE, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def save_classifier(
    clf: SequenceClassifier, tok: Tokenizer, spec: ClassifierSpec, out_dir: str | os.PathLike, *, history: Sequence[dict] = (),
    overwrite: bool = False, protect: Sequence[str | os.PathLike] = (),
) -> Path:
    """Write the run directory (see the module docstring), all or nothing. ``overwrite``
    replaces an earlier run there; it never replaces a file or the ``protect`` paths (the
    base model and the data)."""
    from llmkit import viz

    out = Path(out_dir)
    protect = [*protect, *([spec.base] if spec.base else [])]
    with staged_dir(out, overwrite=overwrite, protect=protect) as tmp:
        if spec.method == "lora":
            save_adapter(clf, tmp, modules_to_save=[clf.head_name], base_model_name_or_path=spec.base)  # no task_type: PEFT then wraps our own module as it is
        else:
            sd = {k: v.detach().cpu().contiguous().clone() for k, v in clf.state_dict().items()}
            atomic_write_with(tmp / WEIGHTS_FILE, lambda t: save_file(sd, t, metadata={"format": "pt"}))
        tok.save(tmp)
        labels = {"id2label": dict(enumerate(spec.classes)), "label2id": {c: i for i, c in enumerate(spec.classes)}}
        atomic_write_text(tmp / SPEC_FILE, json.dumps({**labels, **asdict(spec)}, indent=2))
        atomic_write_text(tmp / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        if spec.metrics:
            atomic_write_text(tmp / "report.json", json.dumps(spec.metrics, indent=2))
            confusion = spec.metrics.get("confusion")
            if confusion:
                viz.confusion_matrix_png(tmp / "confusion.png", confusion, spec.classes, title=f"test confusion matrix ({spec.method})")
    return out


def read_spec(run: str | os.PathLike) -> ClassifierSpec:
    d = Path(run)
    raw = read_json(d / SPEC_FILE, missing=f"{d} is not a classifier run: missing {SPEC_FILE}")
    if not isinstance(raw, dict):
        raise ValueError(f"{d / SPEC_FILE} is corrupt (not a JSON object)")
    raw = {k: v for k, v in raw.items() if k not in ("id2label", "label2id")}  # for readers; the classes say the same
    try:
        return ClassifierSpec(**raw)
    except TypeError as e:
        raise ValueError(f"{d / SPEC_FILE} is corrupt ({e})") from None


def load_classifier(run: str | os.PathLike, map_location: str = "cpu") -> tuple[SequenceClassifier, Tokenizer, ClassifierSpec]:
    """``(classifier in eval mode, tokenizer, spec)`` from a run directory."""
    from llmkit.models.zoo import MODEL_KINDS

    d = Path(run)
    spec = read_spec(d)
    tok = Tokenizer.load(d)
    if spec.method == "lora":
        backbone = _load_base(d, spec, map_location)
        if spec.backbone_kind == "gpt":
            backbone = with_qkv_layout(backbone, split=True)  # the layout the adapters were trained on
        clf = SequenceClassifier(backbone, spec.num_classes, spec.pooling, spec.head_bias)
        load_adapter(clf, d)
    else:
        k = MODEL_KINDS[spec.backbone_kind]
        try:
            backbone = k.model_cls(k.config_cls(**spec.backbone_config))
        except TypeError as e:
            raise ValueError(f"{d / SPEC_FILE} is corrupt (backbone_config: {e})") from None
        clf = SequenceClassifier(backbone, spec.num_classes, spec.pooling, spec.head_bias)
        try:
            sd = load_file(d / WEIGHTS_FILE, device=map_location)
        except FileNotFoundError:
            raise FileNotFoundError(f"{d} has no {WEIGHTS_FILE}") from None
        missing, unexpected = clf.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise ValueError(f"{d / WEIGHTS_FILE} does not fit {SPEC_FILE}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return clf.to(map_location).eval(), tok, spec


def _load_base(run: Path, spec: ClassifierSpec, map_location: str) -> torch.nn.Module:
    """The pre-trained model a LoRA run adapts, checked to be the very one it was trained on."""
    from llmkit.models.zoo import load_model

    if not spec.base:
        raise ValueError(f"{run / SPEC_FILE}: a LoRA classifier needs its base model, and none is named")
    if not (Path(spec.base) / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"the base model {spec.base} of this LoRA classifier is gone; it is needed to load {run}")
    if spec.base_sha256 and weights_sha256(spec.base) != spec.base_sha256:
        raise ValueError(f"the base model {spec.base} has changed since {run} was trained on it (its weights differ); the adapter fits only the original")
    backbone = load_model(spec.base, map_location)
    mine, theirs = dict(spec.backbone_config), asdict(backbone.config)
    for k in ("split_qkv", "tie_weights"):
        mine.pop(k, None)
        theirs.pop(k, None)
    if mine != theirs:
        raise ValueError(f"the base model {spec.base} is not the one {run} was trained on (its configuration differs)")
    return backbone


def classify_texts(run: str | os.PathLike, texts: Sequence[str]) -> list[dict]:
    """The course's pipeline output for ``texts``: ``[{'label': ..., 'score': ...}, ...]``."""
    clf, tok, spec = load_classifier(run)
    return pipeline_output(predict_proba(clf, tok, list(texts), spec.max_length), spec.classes)
