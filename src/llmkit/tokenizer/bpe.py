"""Byte-level BPE encoding engines.

Two engines share one contract (same ranks, same split pattern, same special tokens ->
same ids):

- :class:`PythonEngine` is the readable reference written here from scratch: split the text
  with the pattern, look each piece up whole, and otherwise merge its bytes pair by pair,
  always taking the adjacent pair whose concatenation has the lowest rank (tiktoken's rule).
- :class:`FastEngine` hands the same ranks and pattern to tiktoken's Rust core.

Ranks are ``bytes -> int`` with id == rank == merge priority. Every single byte must have a
rank, so any string can be encoded and ``decode(encode(s)) == s``.
"""

from __future__ import annotations

import heapq
from itertools import chain
import os
from collections.abc import Collection, Iterable, Mapping
from typing import Literal, Protocol

import regex

AllowedSpecial = Literal["all"] | Collection[str]

# Pieces longer than this are merged with a heap (O(n log n)) instead of rescanning every
# pair after each merge (O(n^2)); both give identical results (tested).
_LONG_PIECE = 64
_CACHE_LIMIT = 200_000


class Engine(Protocol):
    """What :class:`llmkit.tokenizer.Tokenizer` needs from an engine."""

    name: str

    def encode_ordinary(self, text: str) -> list[int]: ...

    def encode(self, text: str, allowed_special: AllowedSpecial = ()) -> list[int]: ...

    def encode_batch(self, texts: list[str], allowed_special: AllowedSpecial = ()) -> list[list[int]]: ...


def bpe_merge(piece: bytes, ranks: Mapping[bytes, int]) -> list[int]:
    """Encode one pre-token: repeatedly merge the adjacent pair with the lowest-ranked
    concatenation (leftmost on ties) until no adjacent pair is in the vocabulary."""
    if len(piece) > _LONG_PIECE:
        return _bpe_merge_heap(piece, ranks)
    parts = [piece[i : i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        best_rank, best_i = None, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and (best_rank is None or r < best_rank):
                best_rank, best_i = r, i
        if best_i < 0:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return [ranks[p] for p in parts]


def _bpe_merge_heap(piece: bytes, ranks: Mapping[bytes, int]) -> list[int]:
    """Same result as the pair-scanning loop, for long pieces: parts form a linked list
    keyed by start offset; a heap holds (rank, start) candidates, checked lazily."""
    n = len(piece)
    end = list(range(1, n + 1))  # end[s]: end offset of the part starting at s (0 if gone)
    prev = list(range(-1, n - 1))  # start of the previous part
    heap = []
    for s in range(n - 1):
        r = ranks.get(piece[s : s + 2])
        if r is not None:
            heap.append((r, s, s + 2))
    heapq.heapify(heap)
    while heap:
        r, s, stop = heapq.heappop(heap)
        mid = end[s]
        if mid == 0 or mid >= n or end[mid] != stop:  # stale: a side was merged meanwhile
            continue
        end[s], end[mid] = stop, 0  # merge [s, mid) and [mid, stop)
        if stop < n:
            prev[stop] = s
            r2 = ranks.get(piece[s : end[stop]])
            if r2 is not None:
                heapq.heappush(heap, (r2, s, end[stop]))
        p = prev[s]
        if p >= 0:
            r2 = ranks.get(piece[p:stop])
            if r2 is not None:
                heapq.heappush(heap, (r2, p, stop))
    out, s = [], 0
    while s < n:
        out.append(ranks[piece[s : end[s]]])
        s = end[s]
    return out


def special_regex(tokens: Iterable[str]) -> regex.Pattern | None:
    """A regex matching any of ``tokens`` (longest first), or None when there are none."""
    toks = sorted(set(tokens), key=len, reverse=True)
    return regex.compile("|".join(regex.escape(t) for t in toks)) if toks else None


def resolve_allowed(allowed_special: AllowedSpecial, special_tokens: Mapping[str, int]) -> set[str]:
    """Turn ``"all"`` or a collection of names into a set, rejecting unknown names."""
    if allowed_special == "all":
        return set(special_tokens)
    allowed = set(allowed_special)
    unknown = allowed - set(special_tokens)
    if unknown:
        raise ValueError(f"not special tokens of this tokenizer: {sorted(unknown)}")
    return allowed


class PythonEngine:
    """The from-scratch reference engine: ``regex`` pre-tokenization + :func:`bpe_merge`,
    with a per-piece cache (most pieces of real text repeat)."""

    name = "python"

    def __init__(self, ranks: Mapping[bytes, int], pattern: str, special_tokens: Mapping[str, int]):
        self.ranks = ranks
        self.special_tokens = dict(special_tokens)
        self._split = regex.compile(pattern)
        self._cache: dict[str, list[int]] = {}

    def _encode_piece(self, piece: str) -> list[int]:
        ids = self._cache.get(piece)
        if ids is None:
            b = piece.encode("utf-8")
            r = self.ranks.get(b)
            ids = [r] if r is not None else bpe_merge(b, self.ranks)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[piece] = ids
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        text = _scrub_surrogates(text)
        pieces = self._split.findall(text)
        found = list(map(self._cache.get, pieces))  # most pieces repeat: look them all up at C speed
        if None in found:
            miss = self._encode_piece
            found = [ids if ids is not None else miss(p) for ids, p in zip(found, pieces)]
        return list(chain.from_iterable(found))

    def encode(self, text: str, allowed_special: AllowedSpecial = ()) -> list[int]:
        allowed = resolve_allowed(allowed_special, self.special_tokens)
        rx = special_regex(allowed)
        if rx is None:
            return self.encode_ordinary(text)
        out: list[int] = []
        start = 0
        for m in rx.finditer(text):
            out.extend(self.encode_ordinary(text[start : m.start()]))
            out.append(self.special_tokens[m.group()])
            start = m.end()
        out.extend(self.encode_ordinary(text[start:]))
        return out

    def encode_batch(self, texts: list[str], allowed_special: AllowedSpecial = ()) -> list[list[int]]:
        return [self.encode(t, allowed_special) for t in texts]


class FastEngine:
    """The default engine: the same ranks, pattern and specials run by tiktoken's Rust core
    (regex split and merges in native code, batches across threads)."""

    name = "fast"

    def __init__(self, ranks: Mapping[bytes, int], pattern: str, special_tokens: Mapping[str, int], name: str = "llmkit"):
        import tiktoken  # light (<0.1 s), but only needed here

        self.special_tokens = dict(special_tokens)
        self._enc = tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=dict(ranks), special_tokens=self.special_tokens)

    def encode_ordinary(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode(self, text: str, allowed_special: AllowedSpecial = ()) -> list[int]:
        allowed = resolve_allowed(allowed_special, self.special_tokens)
        return self._enc.encode(text, allowed_special=allowed, disallowed_special=())

    def encode_batch(self, texts: list[str], allowed_special: AllowedSpecial = (), num_threads: int | None = None) -> list[list[int]]:
        """One thread per core by default: more threads than cores was measured slower here."""
        allowed = resolve_allowed(allowed_special, self.special_tokens)
        threads = num_threads or os.cpu_count() or 1
        return self._enc.encode_batch(texts, num_threads=threads, allowed_special=allowed, disallowed_special=())


def _scrub_surrogates(text: str) -> str:
    """Lone surrogates cannot be UTF-8 encoded; like tiktoken, replace them with U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


ENGINES = {"python": PythonEngine, "fast": FastEngine}
