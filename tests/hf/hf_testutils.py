"""Helpers shared by the tests of llmkit.hf (imported by file name: pytest puts tests/hf on sys.path)."""

from __future__ import annotations

import torch


def perturb(model: torch.nn.Module, scale: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """Random weights far from the init, so a wrong transpose or a missing bias would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()
