"""Figures written by the code (matplotlib, headless Agg backend)."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

from llmkit._io import atomic_write_bytes


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def bar_chart(path: str | os.PathLike, labels: Sequence[str], values: Sequence[float], *, title: str, ylabel: str) -> None:
    """A labelled bar chart, each bar annotated with its value."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    bars = ax.bar(labels, values, color=["#c0392b"] + ["#7f8c8d"] * (len(values) - 1))
    for b, v in zip(bars, values):
        ax.annotate(f"{v:.2f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=9)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.spines[["top", "right"]].set_visible(False)
    _save(fig, path)
    plt.close(fig)


def token_length_by_rank(path: str | os.PathLike, lengths: Sequence[int], *, title: str, bucket: int = 256) -> None:
    """Mean token length (bytes) of each block of ``bucket`` merges, in merge order: later
    merges build longer tokens."""
    plt = _plt()
    xs, ys = [], []
    for start in range(0, len(lengths), bucket):
        block = lengths[start : start + bucket]
        xs.append(start + len(block) / 2)
        ys.append(sum(block) / len(block))
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(xs, ys, marker="o", ms=3)
    ax.set_title(title)
    ax.set_xlabel("merge rank")
    ax.set_ylabel(f"mean token length (bytes, per {bucket} merges)")
    ax.spines[["top", "right"]].set_visible(False)
    _save(fig, path)
    plt.close(fig)


def loss_curve(path: str | os.PathLike, records: Sequence[dict], *, title: str = "training loss") -> None:
    """Train loss per logged step, and validation loss where it was measured."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], label="train")
    val = [r for r in records if "val_loss" in r]
    if val:
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], marker="o", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.legend()
    ax.spines[["top", "right"]].set_visible(False)
    _save(fig, path)
    plt.close(fig)


def attention_heatmap(path: str | os.PathLike, weights, labels: Sequence[str], *, title: str) -> None:
    """A (T, T) attention matrix: row = the token attending (query), column = the token
    attended to (key); each row sums to 1."""
    plt = _plt()
    n = len(labels)
    size = min(12.0, 2.0 + 0.32 * n)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(weights, cmap="viridis", vmin=0.0)
    shown = [repr(s)[1:-1] for s in labels]
    ax.set_xticks(range(n), shown, rotation=90, fontsize=8)
    ax.set_yticks(range(n), shown, fontsize=8)
    ax.set_xlabel("attended to (key)")
    ax.set_ylabel("attending (query)")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    _save(fig, path)
    plt.close(fig)


def confusion_matrix_png(
    path: str | os.PathLike, matrix, classes: Sequence[str], *, title: str, normalize: bool = False
) -> None:
    """A confusion-matrix heatmap: row = true class, column = predicted class, each cell
    annotated with its count. With ``normalize`` the colour is the row share (recall on the
    diagonal) and the cell also shows it as a percentage."""
    import numpy as np

    plt = _plt()
    counts = np.asarray(matrix, dtype=np.int64)
    n = len(classes)
    if counts.shape != (n, n):
        raise ValueError(f"confusion matrix has shape {counts.shape}, expected ({n}, {n}) for {n} classes")
    rows = counts.sum(axis=1, keepdims=True)
    shade = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0) if normalize else counts
    size = min(12.0, 2.5 + 0.9 * n)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(shade, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(1, int(counts.max())))
    threshold = (1.0 if normalize else max(1, int(counts.max()))) / 2
    for t in range(n):
        for p in range(n):
            label = f"{counts[t, p]}\n{shade[t, p]:.0%}" if normalize else f"{counts[t, p]}"
            color = "white" if shade[t, p] > threshold else "black"
            ax.text(p, t, label, ha="center", va="center", color=color, fontsize=9)
    ax.set_xticks(range(n), list(classes), rotation=45, ha="right")
    ax.set_yticks(range(n), list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class" if normalize else "count")
    _save(fig, path)
    plt.close(fig)
