"""Causal multi-head self-attention, written twice.

- :func:`explicit_attention` computes the weights head by head, as the course draws it:
  scores = q k^T / sqrt(d), mask the future, softmax, weighted sum of values. It returns the
  weights so they can be inspected and plotted.
- The fast path calls ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels,
  flash attention on GPUs). Tests hold both to the same output (1e-5).

:class:`KVCache` keeps every layer's keys and values for the positions already seen, so
generation feeds only the new token: its query attends to the cached keys. Both paths take
the cache; the causal mask is aligned bottom-right (the T new queries sit at the end of the
Tk keys), which is what ``explicit_attention``'s ``tril(Tk - T)`` already draws.
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


class KVCache:
    """Preallocated keys and values of all layers, (n_layer, B, H, max_len, D) each.

    ``pos`` is how many positions are filled. Each layer calls :meth:`update` with the keys
    and values of the T new positions and gets back the whole past + new (B, H, pos + T, D);
    after the last layer the model calls :meth:`advance` (T), so every layer of one forward
    pass writes at the same offset.
    """

    def __init__(self, n_layer: int, batch_size: int, n_head: int, head_dim: int, max_len: int, *, device=None, dtype=None):
        shape = (n_layer, batch_size, n_head, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, H, T, D) at [pos, pos + T); return keys/values for [0, pos + T)."""
        B, H, T, D = k.shape
        if B != self.batch_size:
            raise ValueError(f"cache holds a batch of {self.batch_size}, got {B}")
        end = self.pos + T
        if end > self.max_len:
            raise ValueError(f"KV cache full: {self.pos} + {T} positions > max_len {self.max_len}")
        self.k[layer, :, :, self.pos : end] = k
        self.v[layer, :, :, self.pos : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]  # (B, H, pos + T, D)

    def advance(self, n: int) -> None:
        self.pos += n

    def reset(self) -> None:
        self.pos = 0

    def positions(self, T: int, device=None) -> torch.Tensor:
        """Absolute positions (T,) of the T new tokens: the same for every row."""
        return torch.arange(self.pos, self.pos + T, device=device)

    def attn_mask(self, T: int, Tk: int) -> torch.Tensor | None:
        """None: every row has the same past, the causal rule is enough."""
        return None


class SlotKVCache:
    """A KV cache of ``slots`` independent sequences of different lengths, for serving many
    requests at once (continuous batching): a request holds a slot from its prefill to its
    last token, and each decoding step feeds one new token for each of the slots chosen with
    :meth:`select` (in that order). Keys and values are (n_layer, slots, H, max_len, D); row
    ``s`` holds ``lengths[s]`` positions, and a row's query sees only its own, through a mask.
    """

    def __init__(self, n_layer: int, slots: int, n_head: int, head_dim: int, max_len: int, *, device=None, dtype=None):
        shape = (n_layer, slots, n_head, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.lengths = torch.zeros(slots, dtype=torch.long, device=device)
        self.rows = torch.arange(0, dtype=torch.long, device=device)

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def fill(self, slot: int, cache: KVCache) -> None:
        """Copy a one-row cache's ``cache.pos`` positions (a prefilled prompt) into ``slot``."""
        n = cache.pos
        if n > self.max_len:
            raise ValueError(f"{n} positions do not fit a slot of {self.max_len}")
        self.k[:, slot, :, :n] = cache.k[:, 0, :, :n]
        self.v[:, slot, :, :n] = cache.v[:, 0, :, :n]
        self.lengths[slot] = n

    def select(self, slots) -> None:
        """The slots the next forward pass decodes, one row of its batch each."""
        self.rows = torch.as_tensor(list(slots), dtype=torch.long, device=self.k.device)
        if len(self.rows) and int(self.lengths[self.rows].max()) >= self.max_len:
            raise ValueError(f"a slot is full ({self.max_len} positions)")

    @property
    def batch_size(self) -> int:
        return len(self.rows)

    def positions(self, T: int, device=None) -> torch.Tensor:
        if T != 1:
            raise ValueError("a slot cache decodes one token per row at a time; prefill with a KVCache and fill()")
        return self.lengths[self.rows][:, None]  # (B, 1): each row's next position

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store each row's new k, v (B, H, 1, D) at its own next position; return the chosen
        rows' keys/values up to the longest of them (B, H, Tk, D)."""
        pos = self.lengths[self.rows]
        self.k[layer, self.rows, :, pos] = k[:, :, 0]
        self.v[layer, self.rows, :, pos] = v[:, :, 0]
        end = int(pos.max()) + 1
        return self.k[layer, self.rows, :, :end], self.v[layer, self.rows, :, :end]

    def attn_mask(self, T: int, Tk: int) -> torch.Tensor:
        """(B, 1, 1, Tk): row b sees its own lengths[b] + 1 positions, not the other rows' longer pasts."""
        return (torch.arange(Tk, device=self.k.device)[None, :] <= self.lengths[self.rows][:, None])[:, None, None, :]

    def advance(self, n: int) -> None:
        self.lengths[self.rows] += n

    def free(self, slot: int) -> None:
        self.lengths[slot] = 0


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with a fused q/k/v projection (GPT-2's layout), or three
    separate ones when ``cfg.split_qkv``."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.split_qkv = cfg.split_qkv
        if cfg.split_qkv:
            self.q_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.qkv_bias)
            self.k_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.qkv_bias)
            self.v_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.qkv_bias)
        else:
            self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.qkv_bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, return_weights: bool = False, *, kv_cache: KVCache | None = None, layer: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, C). With ``kv_cache``, x holds only the new positions; their keys and
        values are stored in the cache (slot ``layer``) and the queries attend to all of it."""
        B, T, C = x.shape
        if self.split_qkv:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)  # each (B, T, C)
        else:
            q, k, v = self.c_attn(x).split(C, dim=2)  # each (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        mask = None
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)  # (B, H, Tk, D), Tk = past + T
            mask = kv_cache.attn_mask(T, k.shape[2])  # rows with pasts of different lengths (serving)
        weights = None
        if return_weights:
            if mask is not None:
                raise ValueError("attention weights are not drawn for a batch of different-length sequences")
            y, weights = explicit_attention(q, k, v)
        elif mask is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, 1, D)
        else:
            p = self.dropout if self.training else 0.0
            y = _sdpa_causal(q, k, v, p)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_drop(self.c_proj(y)), weights


def _sdpa_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
    """Causal SDPA where the T queries are the last T of the Tk key positions."""
    T, Tk = q.shape[2], k.shape[2]
    if T == Tk:  # no past: the ordinary causal square
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    if T == 1:  # one new token sees every cached position: no mask at all
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    # several new tokens after a past (chunked prefill): SDPA's is_causal aligns top-left,
    # so pass the bottom-right mask explicitly; query i sees keys [0, Tk - T + i]
    mask = torch.ones(T, Tk, dtype=torch.bool, device=q.device).tril(Tk - T)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
