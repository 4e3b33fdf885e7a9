"""What every ``llmkit hf finetune`` task shares around ``transformers.Trainer``: training with
logged lines and measured peak memory, merging a LoRA adapter (and measuring the merge),
writing the run directory atomically, and counting parameters. The task recipes
(classification in :mod:`llmkit.hf.finetune`, NER and QA in :mod:`llmkit.hf.finetune_tasks`)
build the model and the data and call these."""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmkit.hf.finetune import HFFinetuneConfig, HFFinetuneResult

__all__ = ["merge_lora", "trainable_and_total", "save_run", "train_with_trainer"]


def trainable_and_total(model) -> tuple[int, int]:
    """(trainable, total) parameters (:func:`llmkit.models.lora.count_parameters` both ways)."""
    from llmkit.models.lora import count_parameters

    return count_parameters(model), count_parameters(model, trainable_only=False)


def _log_callback(log: Callable[[str], None], history: list[dict]):
    from transformers import TrainerCallback

    class LogLines(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))}
            if not logs or "train_runtime" in logs:
                return
            history.append({"step": state.global_step, **logs})
            at = f"step {state.global_step}/{state.max_steps}"
            if "loss" in logs:
                log(f"{at}: loss {logs['loss']:.4f}, lr {logs.get('learning_rate', 0.0):.3g}")
            elif "eval_accuracy" in logs:
                log(f"{at}: val accuracy {logs['eval_accuracy']:.3f}, val macro-F1 {logs.get('eval_macro_f1', 0.0):.3f}, val loss {logs['eval_loss']:.4f}")

    return LogLines()


def train_with_trainer(model, tok, cfg: HFFinetuneConfig, device, train_ds, collator, log: Callable[[str], None], history: list[dict], *,
                       compute_metrics=None):
    """Train with ``transformers.Trainer`` (AdamW, warm-up then linear decay, no checkpoints);
    returns (trainer, steps, seconds, peak memory bytes)."""
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from llmkit.training.perf import PeakMemory

    scratch = tempfile.mkdtemp(prefix="llmkit-trainer-")
    try:
        args = TrainingArguments(
            output_dir=scratch, per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=max(cfg.batch_size, 64),
            learning_rate=cfg.peak_lr, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup, lr_scheduler_type="linear",
            num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1, logging_steps=cfg.log_every, eval_strategy="no",
            save_strategy="no", report_to="none", seed=cfg.seed, data_seed=cfg.seed, use_cpu=device.type == "cpu",
            bf16=cfg.precision == "bf16", fp16=cfg.precision == "fp16", disable_tqdm=True, dataloader_num_workers=0,
        )
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, data_collator=collator, compute_metrics=compute_metrics, processing_class=tok)
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(_log_callback(log, history))
        steps = cfg.max_steps or max(1, math.ceil(len(train_ds) / cfg.batch_size) * math.ceil(cfg.epochs))
        log(f"training: {'LoRA' if cfg.peft == 'lora' else 'all weights'}, about {steps} steps of {cfg.batch_size}, peak lr {cfg.peak_lr:g}, on {trainer.args.device}")
        t0 = time.perf_counter()
        with PeakMemory(trainer.args.device) as mem:
            out = trainer.train()
        seconds = time.perf_counter() - t0
    finally:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    model.eval()
    return trainer, out.global_step, seconds, mem.peak_bytes


def merge_lora(model, batch: dict, log: Callable[[str], None]):
    """Merge the LoRA weights into the base (a new plain model; the PEFT model stays usable
    for saving its adapter) and measure the largest difference of any logits on ``batch``."""
    import copy

    import torch

    batch = {k: v.to(next(model.parameters()).device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        before = model(**batch)
        merged = copy.deepcopy(model).merge_and_unload().eval()
        after = merged(**batch)
    diff = max(float((before[k].float() - after[k].float()).abs().max()) for k in before.keys() if k.endswith("logits"))
    log(f"LoRA merged into the weights: logits within {diff:.2e} of the adapter model's")
    return merged, diff


def save_run(out: Path, r: HFFinetuneResult, peft_model, settings: dict, overwrite: bool, protect: list, figure: Callable[[Path], None] | None = None) -> None:
    """Write the run directory atomically: model/ (merged), adapter/ (LoRA), report.json, and
    whatever ``figure(tmp)`` draws."""
    import json

    from llmkit._io import staged_dir

    with staged_dir(out, overwrite=overwrite, protect=protect) as tmp:
        r.model.save_pretrained(tmp / "model")
        r.tokenizer.save_pretrained(tmp / "model")
        if peft_model is not None:
            peft_model.save_pretrained(tmp / "adapter")
            r.tokenizer.save_pretrained(tmp / "adapter")
        doc = {"settings": {**settings, "split": list(settings.get("split", ()))}, **r.to_dict(), "notes": r.notes, "history": r.history}
        (tmp / "report.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        if figure is not None:
            figure(tmp)
