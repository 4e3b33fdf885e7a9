"""Batch encoding: padding, truncation and overflow windows with a stride.

The course's "truncate with overlap": a text longer than ``max_length`` either loses its
tail (plain truncation) or, with ``return_overflowing_tokens``, is cut into windows of
``max_length`` tokens where consecutive windows share ``stride`` tokens, so no token is lost
and each window keeps some left context. ``overflow_to_sample_mapping`` says which input
text each window came from (Hugging Face's name and meaning).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Padding = bool | Literal["longest", "max_length", "do_not_pad"]


@dataclass
class BatchEncoding:
    """Rows of ids with their attention masks (1 = real token, 0 = padding)."""

    input_ids: list[list[int]]
    attention_mask: list[list[int]]
    overflow_to_sample_mapping: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, key: str) -> list:
        return getattr(self, key)

    def to_tensors(self, kind: Literal["pt", "np"] = "pt") -> dict[str, Any]:
        """The same rows as torch (``"pt"``) or numpy (``"np"``) int64 arrays; rows must
        have equal length (use padding)."""
        if len({len(r) for r in self.input_ids}) > 1:
            raise ValueError("rows have different lengths; encode with padding=True to make tensors")
        names = ["input_ids", "attention_mask"] + (["overflow_to_sample_mapping"] if self.overflow_to_sample_mapping else [])
        if kind == "np":
            import numpy as np

            return {k: np.asarray(getattr(self, k), dtype=np.int64) for k in names}
        if kind == "pt":
            import torch

            return {k: torch.tensor(getattr(self, k), dtype=torch.long) for k in names}
        raise ValueError(f"unknown tensor kind {kind!r}; use 'pt' or 'np'")


def windows(ids: list[int], max_length: int, stride: int) -> list[list[int]]:
    """Cut ``ids`` into windows of at most ``max_length`` tokens, each starting
    ``max_length - stride`` after the previous one, the last one ending at the end."""
    if len(ids) <= max_length:
        return [list(ids)]
    step = max_length - stride
    out = []
    start = 0
    while True:
        out.append(ids[start : start + max_length])
        if start + max_length >= len(ids):
            return out
        start += step


def _check(padding: Padding, truncation: bool, max_length: int | None, stride: int, overflow: bool) -> str:
    mode = {True: "longest", False: "do_not_pad"}.get(padding, padding)  # type: ignore[arg-type]
    if mode not in ("longest", "max_length", "do_not_pad"):
        raise ValueError(f"padding must be True, False, 'longest' or 'max_length', not {padding!r}")
    if (truncation or overflow or mode == "max_length") and (max_length is None or max_length < 1):
        raise ValueError("truncation, overflow windows and padding='max_length' need max_length >= 1")
    if stride < 0 or (overflow and stride >= max_length):  # type: ignore[operator]
        raise ValueError(f"stride must be >= 0 and < max_length, got stride={stride}, max_length={max_length}")
    return mode


def assemble(
    encoded: list[list[int]],
    *,
    padding: Padding = False,
    truncation: bool = False,
    max_length: int | None = None,
    stride: int = 0,
    return_overflowing_tokens: bool = False,
    pad_id: int | None = None,
    padding_side: Literal["right", "left"] = "right",
) -> BatchEncoding:
    """Apply truncation/windows and padding to already-encoded rows."""
    mode = _check(padding, truncation, max_length, stride, return_overflowing_tokens)
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', not {padding_side!r}")
    rows: list[list[int]] = []
    mapping: list[int] = []
    for i, ids in enumerate(encoded):
        if return_overflowing_tokens:
            pieces = windows(ids, max_length, stride)  # type: ignore[arg-type]
        elif truncation:
            pieces = [ids[:max_length]]
        else:
            pieces = [ids]  # engines return fresh lists, so no copy is needed
        rows.extend(pieces)
        mapping.extend([i] * len(pieces))
    masks = [[1] * len(r) for r in rows]
    if mode != "do_not_pad" and rows:
        target = max_length if mode == "max_length" else max(len(r) for r in rows)
        if pad_id is None:
            raise ValueError("padding needs a pad token: this tokenizer has none, pass pad_id")
        for r, m in zip(rows, masks):
            n = max(0, target - len(r))  # type: ignore[operator]
            if padding_side == "right":
                r.extend([pad_id] * n)
                m.extend([0] * n)
            else:
                r[:0] = [pad_id] * n
                m[:0] = [0] * n
    return BatchEncoding(rows, masks, mapping if return_overflowing_tokens else [])
