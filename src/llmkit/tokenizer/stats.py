"""Compression statistics: how many bytes and words one token covers, per tokenizer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import regex

from llmkit.tokenizer.tokenizer import Tokenizer

_WORD = regex.compile(r"\S+")
COMPARE_WITH = ("gpt2", "cl100k_base", "o200k_base")


@dataclass(frozen=True)
class TokenStats:
    """Compression of one tokenizer on one text."""

    tokenizer: str
    n_vocab: int
    n_tokens: int
    n_bytes: int
    n_words: int

    @property
    def bytes_per_token(self) -> float:
        return self.n_bytes / max(self.n_tokens, 1)

    @property
    def tokens_per_word(self) -> float:
        return self.n_tokens / max(self.n_words, 1)

    def as_dict(self) -> dict:
        return {**asdict(self), "bytes_per_token": self.bytes_per_token, "tokens_per_word": self.tokens_per_word}


def token_stats(tokenizer: Tokenizer, texts: Sequence[str], label: str | None = None) -> TokenStats:
    """Encode every text (special-token strings as ordinary text) and count."""
    n_tokens = sum(len(ids) for ids in tokenizer.encode_batch(list(texts)).input_ids)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_words = sum(len(_WORD.findall(t)) for t in texts)
    return TokenStats(label or tokenizer.name, tokenizer.n_vocab, n_tokens, n_bytes, n_words)


def compare(tokenizers: Sequence[Tokenizer | str], texts: Sequence[str]) -> list[TokenStats]:
    """Stats for each tokenizer (objects, named encodings or directories) on the same texts."""
    out = []
    for t in tokenizers:
        tok = t if isinstance(t, Tokenizer) else Tokenizer.from_pretrained(t)
        out.append(token_stats(tok, texts, label=str(t) if not isinstance(t, Tokenizer) else None))
    return out
