"""Supervised fine-tuning on conversations (instruction / chat tuning) of a pre-trained GPT.

:func:`train_sft` loads a pre-trained run, adds the chat special tokens to its tokenizer,
grows the model's token embedding for them (new rows start at the mean of the existing
rows, so the new ids begin as an "average token" instead of noise), and trains with AdamW
on padded batches where only the assistant's tokens carry loss (targets are -100
elsewhere, :meth:`ChatTemplate.to_training_example`). The loss is averaged over assistant
tokens in the batch, not over sequences, so long and short replies weigh per token.

The output is a run directory that ``llmkit.inference.load_pretrained``, ``llmkit
generate`` and ``llmkit chat`` load::

    OUT/model/              config.json (llmkit.chat_template set) + model.safetensors + tokenizer files
    OUT/model/chat_template.json
    OUT/sft.json            config, base, data counts and the final losses
    OUT/metrics.jsonl       one line per logged step / evaluation

It is assembled in a temporary sibling directory and renamed into place, so ``OUT`` is
either complete or absent.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from llmkit._io import atomic_write_text, refuse_nonempty_dir, staged_dir
from llmkit.chat import IGNORE_INDEX, TEMPLATE_NAME, ChatTemplate, Conversation, ensure_chat_tokens
from llmkit.models.gpt import GPT
from llmkit.tokenizer import Tokenizer
from llmkit.tokenizer.patterns import single_digits

Example = tuple[list[int], list[int]]  # (input ids, targets with -100 outside the loss mask)


@dataclass
class SFTConfig:
    """Settings of one chat-tuning run."""

    steps: int = 300
    """Optimizer steps."""
    batch_size: int = 16
    """Conversations per step."""
    lr: float = 3e-4
    """Peak learning rate (after warm-up; cosine decay to ``lr * min_lr_ratio``)."""
    min_lr_ratio: float = 0.1
    warmup: int = 20
    """Linear warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay on matrices (fine-tuning usually uses none)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    max_len: int | None = None
    """Tokens per conversation (longer ones keep their beginning); default the context length."""
    val_fraction: float = 0.05
    """Share of conversations held out to measure the assistant-token loss (0 for none)."""
    eval_every: int = 50
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    """auto (cuda, then mps, then cpu), or a torch device string."""
    split_digits: bool = False
    """Tokenize numbers digit by digit from now on (the base's split pattern made
    :func:`~llmkit.tokenizer.patterns.single_digits`; the run's tokenizer keeps it): a small
    model then copies numbers into tool calls and answers far more reliably."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_len is not None and self.max_len < 2:
            raise ValueError(f"max-len must be >= 2, got {self.max_len}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.warmup < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("warmup, weight_decay and grad_clip must be >= 0")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        from llmkit.device import pick_device

        pick_device(self.device)  # raises for an unknown or unavailable device

    def lr_at(self, step: int) -> float:
        """Linear warm-up to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at the end."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.steps - self.warmup))
        floor = self.lr * self.min_lr_ratio
        return floor + 0.5 * (1 + math.cos(math.pi * progress)) * (self.lr - floor)


# -- the model and its new tokens ------------------------------------------------------


def grow_vocab(model: GPT, old_tok: Tokenizer, new_tok: Tokenizer) -> GPT:
    """A copy of ``model`` whose token embedding (and head, tied or not) covers
    ``new_tok.n_vocab`` ids. Rows of ids ``new_tok`` added to ``old_tok`` are set to the
    mean of the rows of ``old_tok``'s ids; every other row is kept."""
    new_ids = sorted(i for s, i in new_tok.special_tokens.items() if s not in old_tok.special_tokens)
    if not new_ids:
        return model
    n_old = min(old_tok.n_vocab, model.config.vocab_size)
    cfg = dataclasses.replace(model.config, vocab_size=max(model.config.vocab_size, new_tok.n_vocab))
    grown = GPT(cfg)
    state = model.state_dict()
    for name in ("transformer.wte.weight", "lm_head.weight"):  # tied: both names, same values
        w = state[name]  # (V_old, C)
        bigger = torch.cat([w, w.new_zeros(cfg.vocab_size - w.shape[0], w.shape[1])])  # (V_new, C)
        bigger[new_ids] = w[:n_old].mean(0)
        state[name] = bigger
    grown.load_state_dict(state)
    return grown.to(next(model.parameters()).device)


# -- data ------------------------------------------------------------------------------


def build_examples(template: ChatTemplate, conversations: Sequence[Conversation], max_len: int) -> tuple[list[Example], dict]:
    """Training examples of the conversations that have assistant tokens within
    ``max_len``, and counts: ``{"used", "skipped" (no assistant token left), "truncated"}``."""
    examples, skipped, truncated = [], 0, 0
    for k, conv in enumerate(conversations):
        try:
            full = len(template.encode(conv)[0])
            x, y = template.to_training_example(conv, max_len)
        except ValueError as e:
            raise ValueError(f"conversation {k}: {e}") from None
        truncated += full > max_len + 1
        if all(t == IGNORE_INDEX for t in y):
            skipped += 1
            continue
        examples.append((x, y))
    return examples, {"used": len(examples), "skipped": skipped, "truncated": truncated}


def split_examples(examples: list[Example], val_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Shuffle (seeded) and hold out ``val_fraction`` of the examples (at least one when
    the fraction is > 0); ValueError when nothing is left to train on."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(val_fraction * len(order))) if val_fraction > 0 else 0
    if len(order) - n_val < 1:
        raise ValueError(f"{len(examples)} usable conversation(s): too few to hold out {n_val} for validation and train on the rest")
    return [examples[i] for i in order[n_val:]], [examples[i] for i in order[:n_val]]


def collate(batch: Sequence[Example], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(x, y)`` tensors (B, T): inputs padded with ``pad_id``, targets with -100."""
    T = max(len(x) for x, _ in batch)
    x = torch.full((len(batch), T), pad_id, dtype=torch.long)
    y = torch.full((len(batch), T), IGNORE_INDEX, dtype=torch.long)
    for b, (xi, yi) in enumerate(batch):
        x[b, : len(xi)] = torch.tensor(xi)
        y[b, : len(yi)] = torch.tensor(yi)
    return x.to(device), y.to(device)


def _masked_loss(model: GPT, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, int]:
    """(sum of per-token losses on assistant tokens, number of those tokens)."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        _, loss = model(x, y)  # (B, T), 0 where y == -100
    return loss.float().sum(), int((y != IGNORE_INDEX).sum())


@torch.no_grad()
def evaluate_sft(model: GPT, examples: Sequence[Example], batch_size: int, pad_id: int, device: torch.device) -> float:
    """Mean loss (nats) per assistant token over ``examples``."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        s, n = _masked_loss(model, *collate(examples[i : i + batch_size], pad_id, device), device)
        total, count = total + s.item(), count + n
    model.train(was_training)
    return total / max(count, 1)


# -- training --------------------------------------------------------------------------


def _batches(n: int, batch_size: int, seed: int):
    """Endless index batches: a fresh seeded permutation every epoch."""
    gen = torch.Generator().manual_seed(seed)
    pending: list[int] = []
    while True:
        while len(pending) < batch_size:
            pending += torch.randperm(n, generator=gen).tolist()
        yield pending[:batch_size]
        pending = pending[batch_size:]


def _optimizer(model: GPT, cfg: SFTConfig) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), foreach=False)


def fit(model: GPT, train: list[Example], val: list[Example], cfg: SFTConfig, pad_id: int, device: torch.device, log: Callable[[str], None]) -> list[dict]:
    """The training loop; returns the metric records (step 0 holds the initial val loss)."""
    opt, batches = _optimizer(model, cfg), _batches(len(train), cfg.batch_size, cfg.seed)
    records = [{"step": 0, "val_loss": evaluate_sft(model, val, cfg.batch_size, pad_id, device)}] if val else []
    if val:
        log(f"step 0: val loss {records[0]['val_loss']:.3f} (assistant tokens)")
    model.train()
    window: list[float] = []
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = cfg.lr_at(step)
        x, y = collate([train[i] for i in next(batches)], pad_id, device)
        total, n = _masked_loss(model, x, y, device)
        loss = total / max(n, 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        window.append(loss.item())
        done = step + 1
        rec: dict = {}
        if done % cfg.log_every == 0 or done == cfg.steps:
            rec = {"step": done, "train_loss": sum(window) / len(window), "lr": cfg.lr_at(step)}
            window = []
        if val and (done % cfg.eval_every == 0 or done == cfg.steps):
            rec = {"step": done, **rec, "val_loss": evaluate_sft(model, val, cfg.batch_size, pad_id, device)}
        if rec:
            records.append(rec)
            log(f"step {done}/{cfg.steps}: " + ", ".join(f"{k.replace('_', ' ')} {v:.3g}" for k, v in rec.items() if k != "step"))
    return records


def train_sft(
    base: str | os.PathLike, conversations: Sequence[Conversation], out_dir: str | os.PathLike,
    cfg: SFTConfig | None = None, *, overwrite: bool = False, log: Callable[[str], None] = print,
) -> dict:
    """Chat-tune the GPT of the run or model directory ``base`` on ``conversations`` and
    write a run directory at ``out_dir`` (refused when it exists and is not empty, unless
    ``overwrite``). Returns the summary also saved as ``sft.json``: example counts, the
    initial and final validation loss and the last training loss, per assistant token."""
    from llmkit.inference import load_pretrained
    from llmkit.device import pick_device

    cfg = cfg or SFTConfig()
    out = Path(out_dir)
    refuse_nonempty_dir(out, overwrite, protect=[base])  # never replaces (or sits in) the base run
    device = pick_device(cfg.device)
    model, tok, kind = load_pretrained(base)
    if kind != "gpt":
        raise ValueError(f"{base} holds a {kind} model; chat tuning needs a GPT (a decoder that writes left to right)")
    chat_tok = ensure_chat_tokens(tok)
    if cfg.split_digits:
        chat_tok = chat_tok.with_pattern(single_digits(chat_tok.pattern))
    template = ChatTemplate(chat_tok)
    max_len = min(cfg.max_len or model.config.context_length, model.config.context_length)
    examples, counts = build_examples(template, conversations, max_len)
    train, val = split_examples(examples, cfg.val_fraction, cfg.seed)
    log(f"{len(train)} training and {len(val)} validation conversations ({counts['skipped']} without assistant tokens, {counts['truncated']} truncated to {max_len} tokens)")
    torch.manual_seed(cfg.seed)
    model = grow_vocab(model, tok, chat_tok).to(device)
    pad_id = chat_tok.pad_token_id if chat_tok.pad_token_id is not None else template.end_id
    t0 = time.perf_counter()
    records = fit(model, train, val, cfg, pad_id, device, log)
    summary = _summary(records, counts, len(train), len(val), time.perf_counter() - t0)
    _write_run(out, model.cpu().eval(), chat_tok, template, records, {"base": str(base), "config": asdict(cfg), **summary}, overwrite, protect=[base])
    log(f"wrote {out}")
    return summary


def _summary(records: list[dict], counts: dict, n_train: int, n_val: int, seconds: float) -> dict:
    vals = [r["val_loss"] for r in records if "val_loss" in r]
    trains = [r["train_loss"] for r in records if "train_loss" in r]
    return {"train_conversations": n_train, "val_conversations": n_val, **{f"{k}_conversations": v for k, v in counts.items() if k != "used"},
            "initial_val_loss": vals[0] if vals else None, "val_loss": vals[-1] if vals else None,
            "first_train_loss": trains[0] if trains else None, "train_loss": trains[-1] if trains else None, "seconds": seconds}


def _write_run(out: Path, model: GPT, tok: Tokenizer, template: ChatTemplate, records: list[dict], info: dict, overwrite: bool, protect: Sequence = ()) -> None:
    """Assemble the run in a temporary sibling, then rename it to ``out``."""
    from llmkit.models.zoo import save_model

    with staged_dir(out, overwrite=overwrite, protect=protect) as tmp:
        save_model(model, tmp / "model", extra={"chat_template": TEMPLATE_NAME, "base": info["base"]})
        tok.save(tmp / "model")
        atomic_write_text(tmp / "model" / "chat_template.json", json.dumps(template.describe(), indent=2, ensure_ascii=False))
        atomic_write_text(tmp / "sft.json", json.dumps(info, indent=2))
        atomic_write_text(tmp / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records))


__all__ = ["SFTConfig", "build_examples", "collate", "evaluate_sft", "fit", "grow_vocab", "split_examples", "train_sft"]
