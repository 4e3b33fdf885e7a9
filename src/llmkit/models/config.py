"""Model configurations: typed dataclasses, and presets that are data, not if/else."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class GPTConfig:
    """A GPT-2-architecture decoder."""

    vocab_size: int = 50257
    """Number of token ids the embedding and the head cover."""
    context_length: int = 1024
    """Longest sequence (number of learned position embeddings)."""
    n_layer: int = 12
    """Transformer blocks."""
    n_head: int = 12
    """Attention heads per block; ``n_embd`` must divide by it."""
    n_embd: int = 768
    """Width of the residual stream."""
    dropout: float = 0.0
    """Dropout on embeddings, attention weights and residual branches (training only)."""
    qkv_bias: bool = True
    """Bias on the query/key/value projection (GPT-2 has one)."""
    bias: bool = True
    """Biases on the other linear layers and the LayerNorms."""
    tie_weights: bool = True
    """Share the token embedding matrix with the output head (GPT-2 does)."""
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        for f in ("vocab_size", "context_length", "n_layer", "n_head", "n_embd"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


# Presets are data. gpt2-* follow the GPT-2 paper's sizes (124M, 355M, 774M, 1.5B).
GPT_PRESETS: dict[str, dict] = {
    "tiny": dict(context_length=128, n_layer=2, n_head=4, n_embd=128),
    "small": dict(context_length=256, n_layer=6, n_head=6, n_embd=384),
    "gpt2-124m": dict(context_length=1024, n_layer=12, n_head=12, n_embd=768),
    "gpt2-355m": dict(context_length=1024, n_layer=24, n_head=16, n_embd=1024),
    "gpt2-774m": dict(context_length=1024, n_layer=36, n_head=20, n_embd=1280),
    "gpt2-1558m": dict(context_length=1024, n_layer=48, n_head=25, n_embd=1600),
}


def gpt_preset(name: str, **overrides) -> GPTConfig:
    """The preset called ``name`` with ``overrides`` applied (e.g. ``vocab_size=8192``)."""
    if name not in GPT_PRESETS:
        raise ValueError(f"unknown GPT preset {name!r}; choose one of {', '.join(GPT_PRESETS)}")
    known = {f.name for f in fields(GPTConfig)}
    bad = set(overrides) - known
    if bad:
        raise ValueError(f"unknown GPTConfig fields: {sorted(bad)}")
    return replace(GPTConfig(**GPT_PRESETS[name]), **overrides)
