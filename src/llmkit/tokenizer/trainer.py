"""Byte-level BPE training: a fast incremental trainer and the naive reference it is tested against.

Semantics (shared by both trainers, and by the nanochat ``rustbpe`` trainer merge for merge):

- Each text is split on the special tokens first (they are boundaries and are dropped), then
  pre-tokenized with ``regex.findall(pattern, part)``; the pieces ("words") are counted as
  UTF-8 bytes. BPE never merges across two words.
- Ids 0-255 are the single bytes. Merge ``i`` creates id ``256 + i`` whose bytes are the
  concatenation of its pair's bytes.
- A pair's count is the sum, over words, of word frequency times the number of adjacent
  positions holding the pair, overlapping ones included: ``b"aaa"`` holds ``(a, a)`` twice.
- Each step merges the pair with the highest count; ties go to the smallest ``(left, right)``
  tuple. Occurrences are replaced left to right without overlap (``aaa -> [aa, a]``).
- Training stops after ``n_merges`` merges, or earlier when no pair is left; then
  ``len(result.merges) < n_merges`` is the signal.

The fast trainer (``train_bpe``) keeps the unique words as id lists with their counts, the
pair counts, a pair -> word-index set, and a heap with lazy invalidation: a popped entry
whose count is stale is pushed back with its current count. Once a pair exists, its count can
only fall (every pair holding the newest id is born in that id's merge), so the first popped
entry whose count is current is the exact argmax. A merge touches only the words that held
the pair and updates the counts around each replaced occurrence; the corpus is never
recounted. ``train_bpe_naive`` recounts every pair and rewrites every word at each merge.
"""

from __future__ import annotations

import collections
import functools
import heapq
import itertools
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import regex

Progress = Callable[[int, int], None]

#: With ``workers=None``, counting uses two processes once the corpus passes this many chars.
AUTO_PARALLEL_CHARS = 4_000_000
#: Texts are sent to worker processes in batches of about this many chars.
BATCH_CHARS = 1 << 20
#: ``progress`` is called about this many times during merging.
PROGRESS_CALLS = 200


@dataclass
class TrainResult:
    """What a BPE training run produced."""

    merges: list[tuple[int, int]]
    """Merge ``i`` joins this ``(left, right)`` pair into the new id ``256 + i``."""
    vocab: dict[int, bytes]
    """Id -> bytes for all ``256 + len(merges)`` ids."""
    ranks: dict[bytes, int]
    """Bytes -> id (== rank), tiktoken's ``mergeable_ranks``. Should two merges spell the same
    bytes (possible in principle, never seen on real text), the lower id is kept."""
    n_words: int
    """Unique pre-token words."""
    n_pieces: int
    """Total pre-tokens counted."""


# ----------------------------------------------------------------------------- counting


@functools.lru_cache(maxsize=16)
def _compiled(pattern: str) -> regex.Pattern[str]:
    return regex.compile(pattern)


@functools.lru_cache(maxsize=16)
def _special_splitter(specials: tuple[str, ...]) -> Callable[[str], list[str]] | None:
    """A function splitting a text on the special tokens (longest first), or None."""
    alternatives = sorted({s for s in specials if s}, key=len, reverse=True)
    if not alternatives:
        return None
    return regex.compile("|".join(regex.escape(s) for s in alternatives)).split


def _count_batch(batch: list[str], pattern: str, specials: tuple[str, ...]) -> collections.Counter[str]:
    """Count the pre-tokens of a batch of texts (also the worker-process entry point)."""
    findall = _compiled(pattern).findall
    split = _special_splitter(specials)
    counts: collections.Counter[str] = collections.Counter()
    for text in batch:
        for part in split(text) if split else (text,):
            counts.update(findall(part))
    return counts


def _batches(texts: Iterable[str]) -> Iterator[tuple[list[str], int]]:
    """Group texts into ``(batch, n_chars)`` of about ``BATCH_CHARS`` chars (texts stay whole)."""
    batch: list[str] = []
    size = 0
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= BATCH_CHARS:
            yield batch, size
            batch, size = [], 0
    if batch:
        yield batch, size


def _auto_workers(batches: Iterator[tuple[list[str], int]]) -> tuple[int, Iterator[tuple[list[str], int]]]:
    """Pick 2 workers when the corpus is big and there are cores; buffer what was peeked."""
    head: list[tuple[list[str], int]] = []
    seen = 0
    for item in batches:
        head.append(item)
        seen += item[1]
        if seen > AUTO_PARALLEL_CHARS:
            break
    workers = 2 if seen > AUTO_PARALLEL_CHARS and (os.cpu_count() or 1) > 1 else 1
    return workers, itertools.chain(head, batches)


def _pool_context() -> multiprocessing.context.BaseContext:
    # Never plain fork: callers often hold threads (torch, HF tokenizers' rayon pool), and
    # forking a threaded process can deadlock. forkserver starts cheap clean workers.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _count_strings(
    texts: Iterable[str], pattern: str, specials: tuple[str, ...], workers: int | None
) -> collections.Counter[str]:
    batches = _batches(texts)
    if workers is None:
        workers, batches = _auto_workers(batches)
    if workers <= 1:
        total: collections.Counter[str] = collections.Counter()
        for batch, _ in batches:
            total.update(_count_batch(batch, pattern, specials))
        return total
    count = functools.partial(_count_batch, pattern=pattern, specials=specials)
    total = collections.Counter()
    with _pool_context().Pool(workers) as pool:
        for partial in pool.imap_unordered(count, (batch for batch, _ in batches)):
            total.update(partial)
    return total


def count_words(
    texts: Iterable[str],
    pattern: str,
    special_tokens: Sequence[str] = (),
    workers: int | None = None,
) -> collections.Counter[bytes]:
    """Count the UTF-8 pre-token words of ``texts`` split by ``pattern``.

    Special tokens split the texts and are dropped. ``workers`` > 1 counts batches of texts in
    that many processes (a text is never split across processes, so the counts are identical);
    ``None`` uses 2 processes when the corpus exceeds ``AUTO_PARALLEL_CHARS`` chars and the
    machine has more than one core. Scripts that count in parallel need the usual
    ``if __name__ == "__main__":`` guard of :mod:`multiprocessing`.
    """
    counts = _count_strings(texts, pattern, tuple(special_tokens), workers)
    words: collections.Counter[bytes] = collections.Counter()
    for piece, n in counts.items():
        words[piece.encode("utf-8", "replace")] += n  # "replace": lone surrogates
    return words


# ----------------------------------------------------------------------------- fast trainer


def _result(merges: list[tuple[int, int]], word_counts: Mapping[bytes, int]) -> TrainResult:
    vocab = {i: bytes([i]) for i in range(256)}
    for i, (left, right) in enumerate(merges):
        vocab[256 + i] = vocab[left] + vocab[right]
    ranks: dict[bytes, int] = {}
    for i, token in vocab.items():
        ranks.setdefault(token, i)
    n_words = sum(1 for n in word_counts.values() if n > 0)
    n_pieces = sum(n for n in word_counts.values() if n > 0)
    return TrainResult(merges, vocab, ranks, n_words, n_pieces)


def _initial_pairs(
    words: list[list[int]], freqs: list[int], shift: int
) -> tuple[dict[int, int], dict[int, set[int]]]:
    """Pair counts and pair -> word indices; a pair ``(a, b)`` is the int ``a << shift | b``."""
    counts: dict[int, int] = {}
    where: collections.defaultdict[int, set[int]] = collections.defaultdict(set)
    for idx, ids in enumerate(words):
        f = freqs[idx]
        for a, b in itertools.pairwise(ids):
            key = a << shift | b
            counts[key] = counts.get(key, 0) + f
            where[key].add(idx)
    return counts, dict(where)


@dataclass
class _State:
    """The fast trainer's working set."""

    words: list[list[int]]
    freqs: list[int]
    counts: dict[int, int]
    where: dict[int, set[int]]
    shift: int
    mask: int


def _apply_merge(key: int, new: int, state: _State) -> dict[int, set[int]]:
    """Merge pair ``key`` into id ``new`` in every word holding it; update the pair counts.

    Returns the pairs born in this merge (each holds ``new``) with the words holding them.
    """
    shift, counts, words, freqs = state.shift, state.counts, state.words, state.freqs
    a, b = key >> shift, key & state.mask
    del counts[key]  # no (a, b) survives a left-to-right pass; see the module docstring
    born: collections.defaultdict[int, set[int]] = collections.defaultdict(set)
    for idx in state.where.pop(key):
        ids = words[idx]
        last = len(ids) - 1  # an ``a`` in the last slot starts no pair
        try:
            j = ids.index(a, 0, last)
        except ValueError:  # the set is a superset: earlier merges may have used the pair up
            continue
        f, start = freqs[idx], 0
        out: list[int] = []
        while True:
            if ids[j + 1] == b:
                out += ids[start:j]  # untouched run, copied at C speed
                if out:  # (prev, a) -> (prev, new)
                    k = out[-1] << shift | a
                    counts[k] -= f
                    k = out[-1] << shift | new
                    counts[k] = counts.get(k, 0) + f
                    born[k].add(idx)
                if j + 1 < last:  # (b, next) -> (new, next)
                    k = b << shift | ids[j + 2]
                    if k != key:
                        counts[k] -= f
                    k = new << shift | ids[j + 2]
                    counts[k] = counts.get(k, 0) + f
                    born[k].add(idx)
                out.append(new)
                start = j = j + 2
            else:
                j += 1
            try:
                j = ids.index(a, j, last)
            except ValueError:
                break
        if start == 0:
            continue
        out += ids[start:]
        words[idx] = out
    return born


def _merge_loop(state: _State, n_merges: int, progress: Progress | None) -> list[tuple[int, int]]:
    """Pop the best pair from a lazily invalidated heap ``n_merges`` times (or until none)."""
    # One int per heap entry, ``key - count * scale``: the smallest is the highest count,
    # then the smallest pair. Cheaper than comparing (count, pair) tuples.
    scale = 1 << (2 * state.shift)
    heap = [key - n * scale for key, n in state.counts.items()]
    heapq.heapify(heap)
    counts, merges = state.counts, []
    every = max(1, n_merges // PROGRESS_CALLS)
    while len(merges) < n_merges and heap:
        entry = heapq.heappop(heap)
        key = entry % scale
        current = counts.get(key, 0)
        if current != -(entry // scale):  # stale: counts only fall, re-queue at its value
            if current > 0:
                heapq.heappush(heap, key - current * scale)
            continue
        new = 256 + len(merges)
        merges.append((key >> state.shift, key & state.mask))
        for k, holders in _apply_merge(key, new, state).items():
            n = counts[k]
            if n > 0:
                heapq.heappush(heap, k - n * scale)
                state.where[k] = holders
            else:
                del counts[k]
        if progress is not None and len(merges) % every == 0:
            progress(len(merges), n_merges)
    if progress is not None and merges and len(merges) % every:  # ran out of pairs early
        progress(len(merges), n_merges)
    return merges


def train_bpe_from_counts(
    word_counts: Mapping[bytes, int], n_merges: int, *, progress: Progress | None = None
) -> TrainResult:
    """Learn up to ``n_merges`` BPE merges from pre-token word counts (fast, incremental)."""
    if n_merges < 0:
        raise ValueError(f"n_merges must be >= 0, got {n_merges}")
    words: list[list[int]] = []
    freqs: list[int] = []
    for word, n in word_counts.items():
        if n > 0 and len(word) > 1:  # single bytes hold no pair
            words.append(list(word))
            freqs.append(n)
    shift = max(8, (255 + n_merges).bit_length())
    counts, where = _initial_pairs(words, freqs, shift)
    state = _State(words, freqs, counts, where, shift, (1 << shift) - 1)
    merges = _merge_loop(state, n_merges, progress)
    return _result(merges, word_counts)


def train_bpe(
    texts: Iterable[str],
    n_merges: int,
    pattern: str,
    special_tokens: Sequence[str] = (),
    *,
    workers: int | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train a byte-level BPE on ``texts``: count pre-tokens, then merge incrementally.

    ``pattern`` is the split regex (e.g. ``get_pattern("gpt4").tiktoken``); ``workers`` is
    passed to :func:`count_words`; ``progress(done, total)`` is called about
    ``PROGRESS_CALLS`` times while merging. Fewer than ``n_merges`` merges come back when the
    corpus runs out of pairs.
    """
    if n_merges < 0:
        raise ValueError(f"n_merges must be >= 0, got {n_merges}")
    word_counts = count_words(texts, pattern, special_tokens, workers)
    return train_bpe_from_counts(word_counts, n_merges, progress=progress)


# ----------------------------------------------------------------------------- naive reference


def _replace_pair(ids: list[int], pair: tuple[int, int], new: int) -> list[int]:
    """Rewrite ``ids`` with ``pair`` replaced by ``new``, left to right, without overlap."""
    out: list[int] = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_bpe_naive(
    texts: Iterable[str],
    n_merges: int,
    pattern: str,
    special_tokens: Sequence[str] = (),
) -> TrainResult:
    """The textbook trainer: recount every pair and rewrite every word at each merge.

    Quadratic-ish and slow on purpose; it is the reference the fast trainer is tested against.
    """
    if n_merges < 0:
        raise ValueError(f"n_merges must be >= 0, got {n_merges}")
    compiled = regex.compile(pattern)
    split = _special_splitter(tuple(special_tokens))
    word_counts: dict[bytes, int] = {}
    for text in texts:
        for part in split(text) if split else [text]:
            for piece in compiled.findall(part):
                word = piece.encode("utf-8", "replace")
                word_counts[word] = word_counts.get(word, 0) + 1
    words = [list(w) for w in word_counts]
    freqs = list(word_counts.values())
    merges: list[tuple[int, int]] = []
    for step in range(n_merges):
        pair_counts: dict[tuple[int, int], int] = {}
        for ids, f in zip(words, freqs):
            for pair in zip(ids, ids[1:]):
                pair_counts[pair] = pair_counts.get(pair, 0) + f
        if not pair_counts:
            break
        best = min(pair_counts, key=lambda p: (-pair_counts[p], p))
        words = [_replace_pair(ids, best, 256 + step) for ids in words]
        merges.append(best)
    return _result(merges, word_counts)
