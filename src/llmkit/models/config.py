"""Model configurations: typed dataclasses, and presets that are data, not if/else."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


def _from_preset(cls: type, presets: dict[str, dict], name: str, overrides: dict, label: str | None = None):
    """``cls(**presets[name])`` with ``overrides``; unknown names and fields are errors."""
    if name not in presets:
        raise ValueError(f"unknown {label or cls.__name__} preset {name!r}; choose one of {', '.join(presets)}")
    bad = set(overrides) - {f.name for f in fields(cls)}
    if bad:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(bad)}")
    return replace(cls(**presets[name]), **overrides)


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
    split_qkv: bool = False
    """Separate query/key/value projections (``q_proj``, ``k_proj``, ``v_proj``) instead of
    GPT-2's fused ``c_attn``. The same function and parameter count; the course's from-scratch
    GPT and LLaMA-style models are laid out this way, and it lets LoRA adapt W_q and W_v alone
    (as the LoRA paper does). Saved files always use the fused Hugging Face layout."""

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
    return _from_preset(GPTConfig, GPT_PRESETS, name, overrides, "GPT")


@dataclass(frozen=True)
class BertConfig:
    """A BERT-architecture encoder (post-LayerNorm blocks, bidirectional attention, MLM head).

    Not to be confused with ``transformers.BertConfig``; the names here follow :class:`GPTConfig`
    (``n_layer``, ``n_embd``, ...) and ``hf/`` maps them onto Hugging Face's."""

    vocab_size: int = 30522
    """Token ids the embedding and the (tied) MLM decoder cover; the default is BERT's WordPiece."""
    context_length: int = 512
    """Longest sequence (number of learned position embeddings)."""
    n_layer: int = 12
    """Encoder blocks."""
    n_head: int = 12
    """Attention heads per block; ``n_embd`` must divide by it."""
    n_embd: int = 768
    """Width of the residual stream (Hugging Face's ``hidden_size``)."""
    n_inner: int | None = None
    """Hidden width of the MLP; ``None`` means ``4 * n_embd``, as in every published BERT."""
    type_vocab_size: int = 2
    """Segment (token type) ids: 0 for sentence A, 1 for sentence B."""
    dropout: float = 0.0
    """Dropout on embeddings, attention weights and residual branches (training only; BERT used 0.1)."""
    layer_norm_eps: float = 1e-12
    """BERT's LayerNorm epsilon (GPT-2 uses 1e-5)."""

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        for f in ("vocab_size", "context_length", "n_layer", "n_head", "n_embd", "type_vocab_size"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be >= 1")
        if self.n_inner is not None and self.n_inner < 1:
            raise ValueError("n_inner must be >= 1 (or None for 4 * n_embd)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def inner_dim(self) -> int:
        return 4 * self.n_embd if self.n_inner is None else self.n_inner


# Presets are data. tiny/mini/small/medium are the sizes of Google's BERT miniatures
# (Turc et al. 2019, heads = width / 64); bert-base/large are the BERT paper's (110M, 340M).
BERT_PRESETS: dict[str, dict] = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=128),
    "mini": dict(n_layer=4, n_head=4, n_embd=256),
    "small": dict(n_layer=4, n_head=8, n_embd=512),
    "medium": dict(n_layer=8, n_head=8, n_embd=512),
    "bert-base": dict(n_layer=12, n_head=12, n_embd=768),
    "bert-large": dict(n_layer=24, n_head=16, n_embd=1024),
}


def bert_preset(name: str, **overrides) -> BertConfig:
    """The BERT preset called ``name`` with ``overrides`` applied (e.g. ``vocab_size=50261``)."""
    return _from_preset(BertConfig, BERT_PRESETS, name, overrides, "BERT")


# -- baselines: n-gram, NPLM (Bengio et al. 2003), LSTM ------------------------------------
@dataclass(frozen=True)
class NGramConfig:
    """A count-based n-gram language model (n=2 is the Markov chain)."""

    vocab_size: int = 50257
    """Number of token ids the model predicts over."""
    n: int = 2
    """Order: the next token is predicted from the previous ``n - 1`` tokens."""
    smoothing: str = "kneser-ney"
    """``"kneser-ney"`` (interpolated, continuation counts for lower orders), ``"add-k"``
    (Laplace when ``k=1``, maximum likelihood when ``k=0``) or ``"backoff"`` (normalized
    absolute-discount backoff, Katz-style)."""
    k: float = 1.0
    """Pseudo-count added to every (context, token) pair by ``add-k``."""
    discount: float = 0.75
    """Absolute discount D in (0, 1) for ``kneser-ney`` and ``backoff``."""
    modified: bool = False
    """Modified Kneser-Ney (Chen & Goodman 1998): per-order discounts D1, D2, D3+ estimated
    from counts of counts instead of one ``discount`` (also applies to ``backoff``)."""

    def __post_init__(self) -> None:
        if self.vocab_size < 1 or self.n < 1:
            raise ValueError("vocab_size and n must be >= 1")
        if self.smoothing not in ("kneser-ney", "add-k", "backoff"):
            raise ValueError(f"unknown smoothing {self.smoothing!r}; choose kneser-ney, add-k or backoff")
        if self.k < 0:
            raise ValueError("k must be >= 0")
        if not 0.0 < self.discount < 1.0:
            raise ValueError("discount must be in (0, 1)")


NGRAM_PRESETS: dict[str, dict] = {
    "tiny": dict(n=2),  # Kneser-Ney bigram
    "small": dict(n=3),  # Kneser-Ney trigram
    "markov": dict(n=2, smoothing="add-k", k=1.0),  # the course's Markov chain, Laplace-smoothed
    "large": dict(n=4, modified=True),  # modified Kneser-Ney 4-gram
}


def ngram_preset(name: str, **overrides) -> NGramConfig:
    """The n-gram preset called ``name`` with ``overrides`` applied (e.g. ``vocab_size=8192``)."""
    return _from_preset(NGramConfig, NGRAM_PRESETS, name, overrides)


@dataclass(frozen=True)
class NPLMConfig:
    """Bengio et al. (2003)'s neural probabilistic language model."""

    vocab_size: int = 50257
    """Number of token ids; one more embedding row is the left-padding (start) index."""
    context: int = 3
    """Previous tokens the model sees (n - 1 in the paper's n-gram terms)."""
    n_embd: int = 64
    """Width of each token's feature vector (the paper's m)."""
    n_hidden: int = 256
    """Units of the tanh hidden layer (the paper's h)."""
    direct: bool = True
    """Direct connections: a linear map from the concatenated embeddings to the logits (W)."""
    dropout: float = 0.0
    """Dropout on the concatenated embeddings and the hidden layer (training only)."""

    def __post_init__(self) -> None:
        for f in ("vocab_size", "context", "n_embd", "n_hidden"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")


NPLM_PRESETS: dict[str, dict] = {
    "tiny": dict(context=3, n_embd=32, n_hidden=64),
    "small": dict(context=4, n_embd=64, n_hidden=256),
}


def nplm_preset(name: str, **overrides) -> NPLMConfig:
    """The NPLM preset called ``name`` with ``overrides`` applied."""
    return _from_preset(NPLMConfig, NPLM_PRESETS, name, overrides)


@dataclass(frozen=True)
class LSTMConfig:
    """An embedding, stacked LSTM layers and a linear head."""

    vocab_size: int = 50257
    """Number of token ids the embedding and the head cover."""
    n_embd: int = 256
    """Width of the token embeddings (the first LSTM layer's input)."""
    n_hidden: int = 256
    """Hidden (and cell) state width of every LSTM layer."""
    n_layer: int = 2
    """Stacked LSTM layers."""
    dropout: float = 0.0
    """Dropout on the embeddings, between LSTM layers and before the head (training only)."""
    tie_weights: bool = True
    """Share the embedding matrix with the head (Press & Wolf 2017); needs ``n_embd == n_hidden``."""

    def __post_init__(self) -> None:
        for f in ("vocab_size", "n_embd", "n_hidden", "n_layer"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        if self.tie_weights and self.n_embd != self.n_hidden:
            raise ValueError(f"tie_weights needs n_embd == n_hidden (got {self.n_embd} and {self.n_hidden})")


LSTM_PRESETS: dict[str, dict] = {
    "tiny": dict(n_embd=64, n_hidden=64, n_layer=1),
    "small": dict(n_embd=256, n_hidden=256, n_layer=2),
    "medium": dict(n_embd=650, n_hidden=650, n_layer=2, dropout=0.5),  # Zaremba et al. (2014)'s medium
}


def lstm_preset(name: str, **overrides) -> LSTMConfig:
    """The LSTM preset called ``name`` with ``overrides`` applied."""
    return _from_preset(LSTMConfig, LSTM_PRESETS, name, overrides)
