"""``llmkit compare``: the course's model ladder on equal terms.

n-gram, NPLM, LSTM and GPT learn from the same training tokens (same tokenizer, the same
windows in the same order: the neural models train on them, the n-gram model counts them) and
are scored on the same validation windows. The table reports parameters (stored counts for the
n-gram model), training time, validation loss, bits per token and perplexity.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from llmkit._io import atomic_write_text

LADDER = ("ngram", "nplm", "lstm", "gpt")


@dataclass(frozen=True)
class CompareRow:
    model: str
    preset: str
    parameters: int
    train_seconds: float
    train_tokens: int
    val_loss: float
    val_bits_per_token: float
    val_ppl: float


def parse_budget(text: str) -> int:
    """Training tokens per neural model: ``200000``, ``200k`` or ``1.5M``."""
    t = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if scale > 1 else t) * scale
    except ValueError:
        raise ValueError(f"budget must be a number of tokens like 200000, 200k or 1.5M, not {text!r}") from None
    if not value >= 1 or value > 1e12:  # also catches nan and inf
        raise ValueError(f"budget must be between 1 and 1e12 tokens, got {text!r}")
    return int(value)


def same_tokens(train_ids, steps: int, batch_size: int, block_size: int, seed: int):
    """The tokens the neural models see (the same windows, in the same order), joined, so
    the n-gram model counts exactly what the others learn from."""
    import numpy as np

    from llmkit.data.tokens import WindowSampler

    sampler = WindowSampler(train_ids, block_size, batch_size, shuffle=True, seed=seed)
    rows = [sampler.next_batch()[0].numpy() for _ in range(steps)]
    return np.concatenate([r.reshape(-1) for r in rows]) if rows else np.zeros(0, dtype=np.int64)


def _score(model, val, block_size: int, batch_size: int, n_batches: int) -> dict:
    from llmkit.training.loop import evaluate

    return evaluate(model, val, block_size, batch_size, n_batches, torch.device("cpu"), None)


def compare_models(
    token_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    budget_tokens: int = 200_000,
    kinds: tuple[str, ...] = LADDER,
    preset: str = "tiny",
    block_size: int = 64,
    batch_size: int = 16,
    lr: float = 2e-3,
    eval_batches: int = 16,
    seed: int = 1337,
    log=print,
) -> list[CompareRow]:
    """Train and score each kind; writes ``compare.json`` and ``compare.png`` to out_dir."""
    from llmkit import viz
    from llmkit.data.tokens import load_token_files
    from llmkit.models.zoo import COUNTED_KINDS, build_model
    from llmkit.training.loop import TrainConfig, train

    tf = load_token_files(token_dir)
    train_ids, val_ids = tf.split("train"), tf.split("val")
    out = Path(out_dir)
    rows = []
    steps = max(1, math.ceil(budget_tokens / (batch_size * block_size)))
    for kind in kinds:
        torch.manual_seed(seed)
        model = build_model(kind, preset, vocab_size=tf.vocab_size)
        t0 = time.perf_counter()
        if kind in COUNTED_KINDS:
            seen_ids = same_tokens(train_ids, steps, batch_size, block_size, seed)
            model.fit(seen_ids)
            seen = len(seen_ids)
        else:
            cfg = TrainConfig(steps=steps, batch_size=batch_size, block_size=block_size, lr=lr, min_lr=lr / 10,
                              warmup_steps=min(20, steps), eval_every=10**9, log_every=10**9, ckpt_every=10**9, keep_last=1, seed=seed, device="cpu")
            train(model, train_ids, None, cfg, out / "runs" / kind)
            seen = steps * batch_size * block_size
        seconds = time.perf_counter() - t0
        score = _score(model, val_ids, block_size, batch_size, eval_batches)
        row = CompareRow(kind, preset, model.num_parameters(), seconds, seen, score["val_loss"], score["val_bits_per_token"], score["val_ppl"])
        log(f"{kind:6s} {row.parameters:>12,} params  {seconds:7.1f} s  {row.val_bits_per_token:6.3f} bits/token  ppl {row.val_ppl:,.1f}")
        rows.append(row)
    atomic_write_text(out / "compare.json", json.dumps([asdict(r) for r in rows], indent=2))
    viz.bar_chart(out / "compare.png", [r.model for r in rows], [r.val_bits_per_token for r in rows],
                  title="validation bits per token (lower is better)", ylabel="bits per token")
    return rows
