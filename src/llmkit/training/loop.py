"""One training loop for every neural model with the course's signature
``model(x, y) -> (logits, per-token loss)``.

AdamW with decoupled weight decay on matrices only, linear warm-up then cosine decay,
gradient clipping and accumulation, periodic evaluation (loss, perplexity, bits per token),
bf16 autocast on GPUs, optional ``torch.compile``, DDP under ``torchrun``, atomic
checkpoints and bit-for-bit resume. Metrics go to ``RUN/metrics.jsonl`` (one JSON object per
logged step) and ``RUN/loss.png``.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from llmkit.data.tokens import WindowSampler
from llmkit.device import pick_device
from llmkit.training import checkpoint as ckpt
from llmkit.training.distributed import DistInfo, all_reduce_mean, setup_distributed
from llmkit.training.objectives import CAUSAL, Objective
from llmkit.training.perf import flops_per_token, peak_flops


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run."""

    steps: int = 200
    """Optimizer steps."""
    batch_size: int = 8
    """Sequences per optimizer step, over all accumulation micro-steps and processes."""
    grad_accum: int = 1
    """Micro-batches per step (batch_size must divide by grad_accum x processes)."""
    block_size: int | None = None
    """Tokens per sequence; default: the model's context length."""
    stride: int | None = None
    """Distance between window starts; default block_size (no overlap)."""
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 20
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    eval_every: int = 50
    eval_batches: int = 8
    log_every: int = 10
    ckpt_every: int = 50
    keep_last: int = 2
    seed: int = 1337
    device: str = "auto"
    """auto (cuda, then mps, then cpu), or a torch device string."""
    dtype: str = "auto"
    """auto (bf16 autocast on cuda, float32 elsewhere), float32 or bfloat16."""
    compile: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "eval_every", "eval_batches", "log_every", "ckpt_every", "keep_last"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("block_size", "stride"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {v}")
        if self.warmup_steps < 0:
            raise ValueError(f"warm-up steps must be >= 0, got {self.warmup_steps}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} must be divisible by grad_accum {self.grad_accum}")
        if not (math.isfinite(self.lr) and math.isfinite(self.min_lr)) or self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError("need a finite lr > 0 and 0 <= min_lr <= lr")
        if self.grad_clip < 0 or not math.isfinite(self.grad_clip):
            raise ValueError("grad_clip must be >= 0 (0 disables clipping)")
        if self.dtype not in ("auto", "float32", "bfloat16", "bf16"):
            raise ValueError(f"unknown dtype {self.dtype!r}; choose auto, float32 or bfloat16")
        pick_device(self.device)  # raises for an unknown or unavailable device


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr`` then cosine decay to ``min_lr`` at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def _autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"float32": None, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}[cfg.dtype]


def default_block_size(model: torch.nn.Module) -> int:
    """The model's context length, or 64 tokens for models without one (LSTM, NPLM)."""
    return getattr(model.config, "context_length", 64)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """Weight decay on matrices (embeddings, linear weights), none on biases and norms."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), foreach=False)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, data: np.ndarray, block_size: int, batch_size: int, n_batches: int,
    device: torch.device, amp: torch.dtype | None, objective: Objective = CAUSAL,
) -> dict:
    """Mean loss over the first ``n_batches`` sequential windows of ``data``: loss (nats),
    perplexity and bits per token. Masking (MLM) uses a fixed seed, so every evaluation
    sees the same masks and the global RNG is left alone."""
    was_training = model.training
    model.eval()
    sampler = WindowSampler(data, block_size, batch_size, shuffle=False)
    total, count = 0.0, 0
    gen = torch.Generator().manual_seed(0)
    for _ in range(min(n_batches, math.ceil(sampler.n / batch_size))):
        x, y = objective.prepare(*sampler.next_batch(), gen)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            _, loss = model(x.to(device), y.to(device))
        total += loss.float().sum().item()
        count += objective.count(y)
    model.train(was_training)
    mean = total / max(count, 1)
    return {"val_loss": mean, "val_ppl": math.exp(min(mean, 50.0)), "val_bits_per_token": mean / math.log(2)}


class MetricsLog:
    """``metrics.jsonl``: one JSON object per logged step. On resume, lines after the
    checkpoint's step are dropped (they are recomputed identically)."""

    def __init__(self, path: Path, keep_until_step: int | None, enabled: bool = True):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        lines = []
        if keep_until_step is not None and path.exists():
            lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and json.loads(ln)["step"] <= keep_until_step]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        return [json.loads(ln) for ln in self.path.read_text(encoding="utf-8").splitlines() if ln.strip()]


@dataclass
class _Run:
    model: torch.nn.Module
    raw: torch.nn.Module
    optimizer: torch.optim.AdamW
    sampler: WindowSampler
    device: torch.device
    amp: torch.dtype | None
    dist: DistInfo
    block_size: int
    micro_batch: int


def _setup(model: torch.nn.Module, train_data: np.ndarray, cfg: TrainConfig) -> _Run:
    dist = setup_distributed()
    device = pick_device(cfg.device) if not dist.enabled else dist.device
    torch.manual_seed(cfg.seed)
    block = cfg.block_size or default_block_size(model)
    per_step = cfg.batch_size // cfg.grad_accum
    if per_step % dist.world_size:
        raise ValueError(f"batch_size / grad_accum = {per_step} must be divisible by {dist.world_size} processes")
    raw = model.to(device)
    wrapped: torch.nn.Module = raw
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(raw, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        wrapped = torch.compile(wrapped)
    optimizer = make_optimizer(raw, cfg)
    # Every process walks the same window order and takes its own rows of each micro-batch,
    # so N processes see exactly the batches one process would.
    sampler = WindowSampler(train_data, block, per_step, stride=cfg.stride, shuffle=True, seed=cfg.seed)
    return _Run(wrapped, raw, optimizer, sampler, device, _autocast_dtype(cfg, device), dist, block, per_step)


def _loss_only(model: torch.nn.Module) -> dict:
    """Ask a GPT for its loss alone: it then never holds the (B, T, V) logits (see GPT.forward)."""
    from llmkit.models.gpt import GPT

    return {"return_logits": False} if isinstance(model, GPT) else {}


def _micro_step(r: _Run, cfg: TrainConfig, last: bool, objective: Objective) -> float:
    x, y = objective.prepare(*r.sampler.next_batch(), None)  # (per_step, T): the global micro-batch
    rows = slice(r.dist.rank, None, r.dist.world_size)
    x, y = x[rows].to(r.device), y[rows].to(r.device)
    sync = r.dist.enabled and not last and hasattr(r.model, "no_sync")
    ctx = r.model.no_sync() if sync else nullcontext()
    with ctx, torch.autocast(r.device.type, dtype=r.amp, enabled=r.amp is not None):
        _, loss = r.model(x, y, **_loss_only(r.raw))
        loss = objective.reduce(loss, y) / cfg.grad_accum
        loss.backward()
    return loss.item()


def train(
    model: torch.nn.Module,
    train_data: np.ndarray,
    val_data: np.ndarray | None,
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    log: Callable[[str], None] | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
    objective: Objective = CAUSAL,
) -> list[dict]:
    """Train ``model`` for ``cfg.steps`` steps; returns the logged metrics."""
    run = Path(run_dir)
    r = _setup(model, train_data, cfg)
    main = r.dist.rank == 0
    say = log if (log and main) else (lambda m: None)
    start = 0
    if resume:
        path = ckpt.latest_checkpoint(run)
        if path is None:
            raise FileNotFoundError(f"no checkpoint to resume from in {run / 'checkpoints'}")
        state = ckpt.load_checkpoint(path, r.raw, r.optimizer)
        r.sampler.load_state_dict(state["sampler"])
        start = state["step"]
        say(f"resumed from {path.name} (step {start})")
    metrics = MetricsLog(run / "metrics.jsonl", keep_until_step=start if resume else None, enabled=main)
    n_params = sum(p.numel() for p in r.raw.parameters())
    fpt = flops_per_token(r.raw, r.block_size)
    peak = peak_flops(r.device) if main else None
    tokens_per_step = cfg.batch_size * r.block_size
    r.model.train()
    t_last, steps_since = time.perf_counter(), 0
    for step in range(start, cfg.steps):
        lr = lr_at(step, cfg)
        for g in r.optimizer.param_groups:
            g["lr"] = lr
        loss = sum(_micro_step(r, cfg, (k == cfg.grad_accum - 1), objective) for k in range(cfg.grad_accum))
        norm = torch.nn.utils.clip_grad_norm_(r.raw.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
        r.optimizer.step()
        r.optimizer.zero_grad(set_to_none=True)
        loss = all_reduce_mean(loss, r.dist)
        steps_since += 1
        done = step + 1
        rec = None
        if done % cfg.log_every == 0 or done % cfg.eval_every == 0 or done == cfg.steps:
            dt = time.perf_counter() - t_last
            tps = tokens_per_step * steps_since / dt
            rec = {"step": done, "loss": loss, "lr": lr, "tokens": done * tokens_per_step, "tokens_per_s": tps,
                   "bits_per_token": loss / math.log(2), "grad_norm": float(norm) if norm is not None else None}
            if peak:
                rec["mfu"] = fpt * tps / peak
            if val_data is not None and len(val_data) > r.block_size and (done % cfg.eval_every == 0 or done == cfg.steps):
                rec.update(evaluate(r.raw, val_data, r.block_size, max(1, cfg.batch_size // cfg.grad_accum), cfg.eval_batches, r.device, r.amp, objective))
            metrics.write(rec)
            t_last, steps_since = time.perf_counter(), 0
        if main and (done % cfg.ckpt_every == 0 or done == cfg.steps):
            ckpt.save_checkpoint(run, done, r.raw, r.optimizer, {"sampler": r.sampler.state_dict(), "config": asdict(cfg), "n_params": n_params}, cfg.keep_last)
        if progress and main:
            progress(done, cfg.steps, rec or {"step": done, "loss": loss})
    r.dist.barrier()
    records = metrics.read() if main else []
    if main and records:
        from llmkit.viz import loss_curve

        loss_curve(run / "loss.png", records)
    return records
