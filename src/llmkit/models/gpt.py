"""A GPT-2-architecture decoder: token + learned position embeddings, pre-LayerNorm blocks
of causal self-attention and a GELU MLP, a final LayerNorm and a (tied) output head.

Parameter names follow Hugging Face's GPT-2 layout (``transformer.wte``, ``h.N.attn.c_attn``,
...) so conversion is a transpose of the Conv1D weights, nothing more.

For generation, :meth:`GPT.new_kv_cache` + :meth:`GPT.forward_cached` run the model
incrementally: prefill the prompt once, then feed one new token at a time (positions are
offset by what the cache holds). See :mod:`llmkit.generation`.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from llmkit.models.attention import CausalSelfAttention, KVCache
from llmkit.models.common import init_gpt_style, linear_cross_entropy, per_token_cross_entropy
from llmkit.models.config import GPTConfig


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))  # GPT-2's tanh GELU


class Block(nn.Module):
    """x + attn(ln(x)), then x + mlp(ln(x)): pre-LayerNorm residual block."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(
        self, x: torch.Tensor, return_weights: bool = False, *, kv_cache: KVCache | None = None, layer: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, w = self.attn(self.ln_1(x), return_weights, kv_cache=kv_cache, layer=layer)
        x = x + a
        return x + self.mlp(self.ln_2(x)), w


class GPT(nn.Module):
    """``model(x, y) -> (logits (B, T, V), per-token loss (B, T))``; ``model(x) -> (logits, None)``."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
                wpe=nn.Embedding(cfg.context_length, cfg.n_embd),
                drop=nn.Dropout(cfg.dropout),
                h=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer)),
                ln_f=nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps, bias=cfg.bias),
            )
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight
        self.apply(init_gpt_style)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by 1/sqrt(2 L)
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def num_parameters(self, exclude_position_embeddings: bool = False) -> int:
        """Unique parameters (a tied head counts once)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if exclude_position_embeddings else n

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, return_weights: bool = False, return_logits: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``return_logits=False`` (with ``targets``) returns ``(None, loss)`` and computes the
        loss chunk by chunk from the hidden states, never holding the (B, T, V) logits: what a
        training loop wants (:func:`llmkit.models.common.linear_cross_entropy`)."""
        B, T = idx.shape
        if T > self.config.context_length:
            raise ValueError(f"sequence of {T} tokens is longer than the context length {self.config.context_length}")
        pos = torch.arange(T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        self.last_attention: list[torch.Tensor] = []
        for block in self.transformer.h:
            x, w = block(x, return_weights)
            if w is not None:
                self.last_attention.append(w)  # (B, H, T, T) per layer
        h = self.transformer.ln_f(x)  # (B, T, C)
        head = self.lm_head
        if targets is not None and not return_logits and type(head) is nn.Linear and head.bias is None and not torch.compiler.is_compiling():
            return None, linear_cross_entropy(h, head.weight, targets)  # (B, T), no logits held
        logits = head(h)  # (B, T, V)
        if targets is None:
            return logits, None
        return logits, per_token_cross_entropy(logits, targets)  # (B, T); reduce outside

    def new_kv_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty cache for ``batch_size`` sequences of up to ``max_len`` (default: the
        context length) positions, on the model's device and dtype."""
        c = self.config
        max_len = c.context_length if max_len is None else min(max_len, c.context_length)
        w = self.transformer.wte.weight
        return KVCache(c.n_layer, batch_size, c.n_head, c.head_dim, max_len, device=w.device, dtype=w.dtype)

    def forward_cached(
        self, idx: torch.Tensor, cache: KVCache, *, last_only: bool = False, return_weights: bool = False
    ) -> torch.Tensor:
        """Logits (B, T, V) for the T new tokens ``idx`` that follow the positions already in
        ``cache`` (a :class:`KVCache`, or a :class:`SlotKVCache` whose rows have pasts of
        different lengths); their keys/values are appended to it. ``last_only``
        keeps only the last position's logits (B, 1, V), which is all decoding needs."""
        B, T = idx.shape
        if isinstance(cache, KVCache) and cache.pos + T > self.config.context_length:  # (a SlotKVCache checks in select())
            raise ValueError(f"positions {cache.pos}..{cache.pos + T - 1} exceed the context length {self.config.context_length}")
        pos = cache.positions(T, device=idx.device)  # absolute positions of the new tokens: (T,), or (B, T) per row
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.transformer.h):
            x, _ = block(x, return_weights, kv_cache=cache, layer=i)
        cache.advance(T)  # every layer wrote at [start, start + T)
        if last_only:
            x = x[:, -1:]  # (B, 1, C)
        return self.lm_head(self.transformer.ln_f(x))  # (B, T or 1, V)

    def attention_weights(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """Run the explicit attention path and return each layer's weights (B, H, T, T)."""
        with torch.no_grad():
            self.forward(idx, return_weights=True)
        return self.last_attention


# -- Hugging Face's GPT-2 file layout -------------------------------------------------------------
HF_CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
"""The weights transformers' GPT-2 keeps in ``Conv1D`` (in, out) layout, transposed from ``nn.Linear``'s."""


def conv1d_transposed(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A GPT state dict with the :data:`HF_CONV1D_WEIGHTS` transposed (either direction)."""
    return {k: (v.t().contiguous() if k.endswith(HF_CONV1D_WEIGHTS) else v) for k, v in sd.items()}


# -- the two q/k/v layouts ------------------------------------------------------------------------
_QKV = ("q_proj", "k_proj", "v_proj")


def fuse_qkv_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict of the split layout (``attn.q_proj/k_proj/v_proj``) in the fused one
    (``attn.c_attn``, rows q then k then v); other entries unchanged."""
    out = {k: v for k, v in sd.items() if not any(f".attn.{p}." in k for p in _QKV)}
    for key in sd:
        if ".attn.q_proj." in key:
            prefix, leaf = key.split(".attn.q_proj.")
            out[f"{prefix}.attn.c_attn.{leaf}"] = torch.cat([sd[f"{prefix}.attn.{p}.{leaf}"] for p in _QKV], dim=0)
    return out


def split_qkv_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`fuse_qkv_state` (weights laid out (out, in), as nn.Linear has them)."""
    out = {k: v for k, v in sd.items() if ".attn.c_attn." not in k}
    for key, value in sd.items():
        if ".attn.c_attn." in key:
            prefix, leaf = key.split(".attn.c_attn.")
            for p, part in zip(_QKV, value.chunk(3, dim=0)):
                out[f"{prefix}.attn.{p}.{leaf}"] = part.contiguous()
    return out


def with_qkv_layout(model: GPT, split: bool) -> GPT:
    """The same function in the other q/k/v layout (a new model; ``model`` is untouched)."""
    if model.config.split_qkv == split:
        return model
    w = model.transformer.wte.weight
    new = GPT(dataclasses.replace(model.config, split_qkv=split)).to(device=w.device, dtype=w.dtype)
    sd = model.state_dict()
    new.load_state_dict(split_qkv_state(sd) if split else fuse_qkv_state(sd))
    return new.train(model.training)
