"""Causal multi-head self-attention, written twice.

- :func:`explicit_attention` computes the weights head by head, as the course draws it:
  scores = q k^T / sqrt(d), mask the future, softmax, weighted sum of values. It returns the
  weights so they can be inspected and plotted.
- The fast path calls ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels,
  flash attention on GPUs). Tests hold both to the same output (1e-5).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from llmkit.models.config import GPTConfig


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k, v: (B, H, T, D). Returns the output (B, H, T, D) and weights (B, H, T, T)."""
    B, H, T, D = q.shape
    outs, weights = [], []
    mask = torch.ones(T, k.shape[2], dtype=torch.bool, device=q.device).tril(k.shape[2] - T) if causal else None
    for h in range(H):  # one head at a time, the way the course explains it
        scores = q[:, h] @ k[:, h].transpose(-2, -1) / math.sqrt(D)  # (B, T, Tk)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        w = scores.softmax(dim=-1)  # (B, T, Tk): each row sums to 1
        outs.append(w @ v[:, h])  # (B, T, D)
        weights.append(w)
    return torch.stack(outs, dim=1), torch.stack(weights, dim=1)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with a fused q/k/v projection (GPT-2's layout)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.qkv_bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, return_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # each (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        weights = None
        if return_weights:
            y, weights = explicit_attention(q, k, v)
        else:
            p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_drop(self.c_proj(y)), weights
