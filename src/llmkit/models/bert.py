"""A BERT-architecture encoder with its masked-language-model head, the MLM masking rule,
and the ``[CLS] a [SEP] b [SEP]`` input builder.

The encoder differs from :mod:`llmkit.models.gpt` in four places the course points at:
attention looks both ways (a padding mask, no causal mask); the embedding adds a segment
(token type) vector; blocks are post-LayerNorm (``x = LN(x + f(x))``, the 2018 layout); and
the head is an MLM head (dense + GELU + LayerNorm, then a decoder tied to the word
embeddings plus a bias of its own).

Parameter names follow Hugging Face's ``BertForMaskedLM`` (``bert.encoder.layer.N.attention.
self.query``, ``cls.predictions.transform.dense``, ...), so our ``state_dict`` loads into
transformers as it is. Like HF's MLM model there is no pooler.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn

from llmkit.models.common import init_gpt_style
from llmkit.models.config import BertConfig

if TYPE_CHECKING:
    from llmkit.tokenizer import Tokenizer

IGNORE_INDEX = -100
"""Label of positions that carry no loss (PyTorch's and Hugging Face's convention)."""


# -- attention with a padding mask --------------------------------------------------------------
def padding_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) mask, 1 = real token, 0 = padding -> additive (B, 1, 1, T) bias: 0 on real keys,
    the dtype's most negative number on padded ones. A finite number rather than -inf keeps an
    all-padding row finite (it attends uniformly) instead of turning into NaN."""
    keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, Tk): broadcast over heads and queries
    return torch.zeros(keep.shape, dtype=dtype, device=attention_mask.device).masked_fill(~keep, torch.finfo(dtype).min)


def explicit_masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k, v: (B, H, T, D); bias: additive, broadcastable to (B, H, T, T). Returns the output
    (B, H, T, D) and the weights (B, H, T, T), whose padded keys get exactly zero weight."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, Tk): every query sees every key
    if bias is not None:
        scores = scores + bias  # padded keys drop to ~-3e38, so exp() underflows to 0
    weights = scores.softmax(dim=-1)  # (B, H, T, Tk): each row sums to 1
    return weights @ v, weights


class BertSelfAttention(nn.Module):
    """Bidirectional multi-head attention with separate q/k/v projections (BERT's layout)."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.query = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.key = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.value = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, return_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, C = x.shape
        q, k, v = (p(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for p in (self.query, self.key, self.value))  # (B, H, T, D)
        bias = None if mask is None else padding_bias(mask, q.dtype)  # in q's dtype, so autocast (bf16) works too
        weights = None
        if return_weights:
            y, weights = explicit_masked_attention(q, k, v, bias)
        else:
            p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)  # (B, H, T, D)
        return y.transpose(1, 2).reshape(B, T, C), weights  # heads side by side again


class PostNorm(nn.Module):
    """``LN(residual + dropout(dense(h)))``: the sub-layer exit of a post-LayerNorm block."""

    def __init__(self, n_in: int, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(n_in, cfg.n_embd)
        self.LayerNorm = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(residual + self.dropout(self.dense(h)))


class BertAttention(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = PostNorm(cfg.n_embd, cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, return_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, w = self.self(x, mask, return_weights)
        return self.output(a, x), w


class BertIntermediate(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.n_embd, cfg.inner_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # exact (erf) GELU, as BERT's "gelu"; GPT-2 uses the tanh one


class BertLayer(nn.Module):
    """x = LN(x + attn(x)); x = LN(x + mlp(x)): post-LayerNorm residual block."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = PostNorm(cfg.inner_dim, cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, return_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, w = self.attention(x, mask, return_weights)
        return self.output(self.intermediate(x), x), w


class BertEmbeddings(nn.Module):
    """token + segment + position embeddings, then LayerNorm and dropout."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.position_embeddings = nn.Embedding(cfg.context_length, cfg.n_embd)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.n_embd)
        self.LayerNorm = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, idx: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)  # (T,): right padding keeps positions right
        x = self.word_embeddings(idx) + self.token_type_embeddings(token_type_ids) + self.position_embeddings(pos)  # (B, T, C)
        return self.dropout(self.LayerNorm(x))


# -- the MLM head --------------------------------------------------------------------------------
class BertPredictionHeadTransform(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.LayerNorm = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    """transform, then ``x @ word_embeddings^T + bias``: the decoder weight is tied by the model."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(cfg)
        self.decoder = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))  # the head's only untied output parameter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x)) + self.bias  # (B, T, V)


class Bert(nn.Module):
    """``model(x, y, attention_mask, token_type_ids) -> (logits (B, T, V), per-token loss (B, T))``;
    ``model(x) -> (logits, None)``.

    ``attention_mask`` is (B, T) with 1 on real tokens and 0 on (right) padding; ``None`` means
    no padding. ``token_type_ids`` is (B, T) segment ids; ``None`` means all sentence A.
    ``y`` holds the MLM labels: the original id at chosen positions and ``-100`` elsewhere
    (see :func:`mask_tokens`). The loss is ``cross_entropy(reduction="none", ignore_index=-100)``,
    so ignored positions carry exactly 0; average it over the labelled positions only, e.g.
    ``loss.sum() / (y != -100).sum()`` (see :func:`mlm_mean`), not with ``loss.mean()``.
    """

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.config = cfg
        self.bert = nn.ModuleDict(
            dict(
                embeddings=BertEmbeddings(cfg),
                encoder=nn.ModuleDict(dict(layer=nn.ModuleList(BertLayer(cfg) for _ in range(cfg.n_layer)))),
            )
        )
        self.cls = nn.ModuleDict(dict(predictions=BertLMPredictionHead(cfg)))
        self.apply(init_gpt_style)
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight  # tied

    def num_parameters(self) -> int:
        """Unique parameters (the tied decoder counts once)."""
        return sum(p.numel() for p in self.parameters())

    def encode(
        self,
        idx: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        return_weights: bool = False,
    ) -> torch.Tensor:
        """The encoder's last hidden states (B, T, C), before the MLM head (for pooling,
        classification heads and sentence embeddings)."""
        B, T = idx.shape
        if T > self.config.context_length:
            raise ValueError(f"sequence of {T} tokens is longer than the context length {self.config.context_length}")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(idx)
        x = self.bert.embeddings(idx, token_type_ids)  # (B, T, C)
        self.last_attention: list[torch.Tensor] = []
        for layer in self.bert.encoder.layer:
            x, w = layer(x, attention_mask, return_weights)
            if w is not None:
                self.last_attention.append(w)  # (B, H, T, T) per layer
        return x

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        return_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T = idx.shape
        logits = self.cls.predictions(self.encode(idx, attention_mask, token_type_ids, return_weights=return_weights))  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none", ignore_index=IGNORE_INDEX)
        return logits, loss.view(B, T)  # 0 where targets == -100; reduce outside

    def attention_weights(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Run the explicit attention path and return each layer's weights (B, H, T, T)."""
        with torch.no_grad():
            self.encode(idx, attention_mask, token_type_ids, return_weights=True)
        return self.last_attention


def mlm_mean(loss: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The mean of a per-token MLM loss over the labelled positions (0 if there are none)."""
    return loss.sum() / (labels != IGNORE_INDEX).sum().clamp(min=1)


# -- the masked-LM objective ---------------------------------------------------------------------
def mask_tokens(
    ids: torch.Tensor,
    *,
    mask_id: int,
    vocab_size: int,
    special_ids: Iterable[int] = (),
    prob: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking rule. Each position whose id is not special (``special_ids`` and
    ``mask_id`` itself: CLS, SEP, PAD, ...) is chosen with probability ``prob``; a chosen
    position becomes ``mask_id`` with probability 0.8, a random non-special id with 0.1, and
    stays as it is with 0.1. Returns new ``(inputs, labels)``: labels hold the original id at
    chosen positions and ``-100`` everywhere else. ``ids`` is left untouched.

    Random draws come from ``generator`` (on ``ids``' device), so a seeded generator gives the
    same masks every time.
    """
    if ids.dtype != torch.long:
        raise TypeError(f"ids must be torch.long, not {ids.dtype}")
    if not 0.0 <= prob <= 1.0:
        raise ValueError("prob must be in [0, 1]")
    special = torch.tensor(sorted({int(s) for s in special_ids} | {int(mask_id)}), dtype=torch.long, device=ids.device)
    ordinary = torch.ones(vocab_size, dtype=torch.bool, device=ids.device)
    ordinary[special[(special >= 0) & (special < vocab_size)]] = False
    candidates = ordinary.nonzero().squeeze(1)  # (N,) ids a random replacement may take
    if len(candidates) == 0:
        raise ValueError("every id is special; nothing to replace with")

    def coin(p: float) -> torch.Tensor:
        return torch.rand(ids.shape, generator=generator, device=ids.device) < p

    chosen = coin(prob) & ~torch.isin(ids, special)  # (B, T)
    to_mask = chosen & coin(0.8)
    to_random = chosen & ~to_mask & coin(0.5)  # half of the remaining 20 %
    inputs = ids.clone()
    inputs[to_mask] = mask_id
    draw = torch.randint(len(candidates), ids.shape, generator=generator, device=ids.device)
    inputs[to_random] = candidates[draw[to_random]]
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    return inputs, labels


# -- inputs from a Tokenizer ---------------------------------------------------------------------
def _special_id(tokenizer: Tokenizer, name: str) -> int:
    try:
        return tokenizer.special_tokens[name]
    except KeyError:
        raise ValueError(
            f"the tokenizer has no {name} token; add them with "
            'tokenizer.add_special_tokens(["[CLS]", "[SEP]", "[MASK]", "[PAD]"])'
        ) from None


def _truncate_pair(a: list[int], b: list[int] | None, budget: int) -> tuple[list[int], list[int] | None]:
    """Drop tokens from the end of the longer text, one at a time, until both fit (HF's
    ``longest_first``)."""
    a = list(a)
    if b is None:
        return a[:budget], None
    b = list(b)
    while len(a) + len(b) > budget:
        (a if len(a) >= len(b) else b).pop()
    return a, b


def encode_for_bert(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    text_pairs: Sequence[str] | None = None,
    max_length: int = 512,
    *,
    padding: Literal["longest", "max_length"] = "longest",
) -> dict[str, torch.Tensor]:
    """Encode ``texts`` (and optional ``text_pairs``) as ``[CLS] a [SEP]`` or
    ``[CLS] a [SEP] b [SEP]``, truncated to ``max_length`` tokens (the longer text loses its
    tail first) and right-padded with ``[PAD]`` to the longest row (or to ``max_length``).

    Returns ``input_ids``, ``attention_mask`` (1 real, 0 padding) and ``token_type_ids``
    (0 for ``[CLS] a [SEP]``, 1 for ``b [SEP]``, 0 on padding), each a (B, T) long tensor.
    The texts go through ``tokenizer.encode``, so a ``"[MASK]"`` typed inside a text is
    ordinary text, never the special token.
    """
    if isinstance(texts, str) or isinstance(text_pairs, str):
        raise TypeError("encode_for_bert takes lists of strings, not one string")
    if text_pairs is not None and len(text_pairs) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(text_pairs)} text_pairs")
    if padding not in ("longest", "max_length"):
        raise ValueError(f"unknown padding {padding!r}; use 'longest' or 'max_length'")
    cls, sep, pad = (_special_id(tokenizer, n) for n in ("[CLS]", "[SEP]", "[PAD]"))
    n_special = 2 if text_pairs is None else 3
    if max_length < n_special:
        raise ValueError(f"max_length={max_length} leaves no room for the {n_special} special tokens")
    rows, types = [], []
    for i, text in enumerate(texts):
        pair = None if text_pairs is None else tokenizer.encode(text_pairs[i])
        a, b = _truncate_pair(tokenizer.encode(text), pair, max_length - n_special)
        row, tt = [cls, *a, sep], [0] * (len(a) + 2)
        if b is not None:
            row += [*b, sep]
            tt += [1] * (len(b) + 1)
        rows.append(row)
        types.append(tt)
    width = max_length if padding == "max_length" else max((len(r) for r in rows), default=0)
    out = {
        "input_ids": [r + [pad] * (width - len(r)) for r in rows],
        "attention_mask": [[1] * len(r) + [0] * (width - len(r)) for r in rows],
        "token_type_ids": [t + [0] * (width - len(t)) for t in types],
    }
    return {k: torch.tensor(v, dtype=torch.long).view(len(rows), width) for k, v in out.items()}
