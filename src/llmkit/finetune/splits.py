"""Stratified train / validation / test splits of labelled texts."""

from __future__ import annotations

import random
from collections.abc import Sequence

from llmkit.finetune.data import LabelledDataError, LabelledTexts

__all__ = ["stratified_split"]


def stratified_split(
    data: LabelledTexts, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[LabelledTexts, LabelledTexts, LabelledTexts]:
    """Train / validation / test parts that keep each class's share (within rounding).

    Each class's examples are shuffled with a seeded RNG and cut by ``fractions``; a class
    with at least as many examples as there are non-zero fractions (3 for the default) appears
    in every non-empty part. Parts are disjoint, cover ``data``, and keep the original order.
    """
    fractions = _check_fractions(fractions)
    rng = random.Random(seed)
    parts: list[list[int]] = [[], [], []]
    for members in data.members():
        members = list(members)
        rng.shuffle(members)
        start = 0
        for part, size in zip(parts, _allocate(len(members), fractions)):
            part += members[start : start + size]
            start += size
    train, val, test = (data.subset(sorted(p)) for p in parts)
    return train, val, test


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3:
        raise LabelledDataError(f"fractions must be 3 numbers (train, val, test), got {len(values)}")
    if any(not f >= 0 for f in values) or abs(sum(values) - 1.0) > 1e-6:
        raise LabelledDataError(f"fractions must be >= 0 and sum to 1, got {values}")
    return values  # type: ignore[return-value]


def _allocate(n: int, fractions: Sequence[float]) -> list[int]:
    """Split ``n`` into parts by largest remainder; then every non-zero fraction gets >= 1 if n allows."""
    exact = [n * f for f in fractions]
    sizes = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - sizes[i]), i))
    for i in by_remainder[: n - sum(sizes)]:
        sizes[i] += 1
    wanted = [i for i, f in enumerate(fractions) if f > 0]
    if n >= len(wanted):
        for i in wanted:
            if sizes[i] == 0:
                donor = max(range(len(sizes)), key=lambda j: sizes[j])
                sizes[donor] -= 1
                sizes[i] += 1
    return sizes
