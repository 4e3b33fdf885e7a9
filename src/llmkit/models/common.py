"""Pieces shared by the models."""

from __future__ import annotations

from torch import nn


def init_gpt_style(m: nn.Module, std: float = 0.02) -> None:
    """GPT-2/BERT initialisation for one module (use with ``model.apply``): N(0, std)
    weights for linear layers and embeddings, zero biases, LayerNorm at the identity."""
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, mean=0.0, std=std)
    if isinstance(m, nn.Linear) and m.bias is not None:
        nn.init.zeros_(m.bias)
    if isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
