"""Tests of the BPE trainer against its naive reference, rustbpe and HF ``tokenizers``."""

from __future__ import annotations

import pathlib
import pydoc
import sysconfig
from collections.abc import Callable

import pytest
import tiktoken

from llmkit.tokenizer import trainer
from llmkit.tokenizer.patterns import get_pattern
from llmkit.tokenizer.trainer import (
    TrainResult,
    count_words,
    train_bpe,
    train_bpe_from_counts,
    train_bpe_naive,
)

PATTERNS = ("gpt2", "gpt4", "o200k")
STDLIB = pathlib.Path(sysconfig.get_paths()["stdlib"])
SYNTHETIC = [
    "a" * 300,
    "aaaa aaa aa a " * 20 + "abababab bababa",
    " " * 40 + "x\n\n\n\t\t  \r\n" * 7 + "   \n",
    "naïve café Ünïcödé — 日本語のテキスト, Ελληνικά, русский текст 123456789 3.14159",
    "emoji 😀😀😀😀 👩‍👩‍👧‍👦 🇫🇷🇫🇷 ✨✨ and 'll 've 're CamelCaseWords HTTPServer",
]


def stdlib_texts(names: list[str]) -> list[str]:
    """The sources of some stdlib modules (given as paths relative to the stdlib)."""
    return [(STDLIB / name).read_text(encoding="utf-8") for name in names]


def small_corpus() -> list[str]:
    """About 40 KB of Python source plus the synthetic stress strings."""
    return stdlib_texts(["textwrap.py", "heapq.py", "json/decoder.py"]) + SYNTHETIC


@pytest.fixture(scope="module")
def megabyte_corpus() -> list[str]:
    """About 1 MB: pydoc text of a few modules, then every 7th non-test stdlib .py file."""
    import collections
    import json
    import textwrap

    texts = [pydoc.render_doc(m, renderer=pydoc.plaintext) for m in (collections, json, textwrap)]
    skip = {"test", "tests", "idle_test", "site-packages"}
    files = sorted(p for p in STDLIB.rglob("*.py") if not skip & set(p.relative_to(STDLIB).parts))
    size = sum(map(len, texts))
    for path in files[::7]:
        if size > 1_000_000:
            break
        texts.append(path.read_text(encoding="utf-8", errors="replace"))
        size += len(texts[-1])
    return texts


def bytes_per_token(texts: list[str], encode: Callable[[str], list[int]]) -> float:
    """UTF-8 bytes of ``texts`` divided by the tokens ``encode`` makes of them."""
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return n_bytes / sum(len(encode(t)) for t in texts)


def tiktoken_encoding(result: TrainResult, pattern: str) -> tiktoken.Encoding:
    return tiktoken.Encoding("llmkit-test", pat_str=pattern, mergeable_ranks=result.ranks, special_tokens={})


# ----------------------------------------------------------------------------- naive reference


@pytest.mark.parametrize("name", PATTERNS)
def test_fast_equals_naive(name: str) -> None:
    pattern = get_pattern(name).tiktoken
    texts = small_corpus()
    naive = train_bpe_naive(texts, 300, pattern)
    assert len(naive.merges) == 300
    for n in (0, 1, 37, 300):
        fast = train_bpe(texts, n, pattern, workers=1)
        assert fast.merges == naive.merges[:n]
        assert (fast.n_words, fast.n_pieces) == (naive.n_words, naive.n_pieces)
    assert fast.vocab == naive.vocab and fast.ranks == naive.ranks


@pytest.mark.slow
@pytest.mark.parametrize("name", PATTERNS)
def test_fast_equals_naive_100kb(name: str) -> None:
    pattern = get_pattern(name).tiktoken
    texts = stdlib_texts(["argparse.py", "textwrap.py"]) + SYNTHETIC
    assert train_bpe(texts, 1000, pattern).merges == train_bpe_naive(texts, 1000, pattern).merges


@pytest.mark.parametrize("name", PATTERNS)
def test_runs_out_of_pairs_like_naive(name: str) -> None:
    pattern = get_pattern(name).tiktoken
    fast = train_bpe(SYNTHETIC, 5000, pattern)
    naive = train_bpe_naive(SYNTHETIC, 5000, pattern)
    assert fast.merges == naive.merges
    assert 0 < len(fast.merges) < 5000  # fewer merges is how "no pair left" is reported
    assert len(fast.vocab) == 256 + len(fast.merges)


def test_overlapping_occurrences_count_and_ties_pick_smallest_pair() -> None:
    # "zzz" holds (z, z) twice: 3 words x 2 = 6 beats (a, b) x 4 only when overlaps count.
    # (This is rustbpe's rule too, see test_toy_corpora_match_rustbpe.)
    result = train_bpe_from_counts({b"zzz": 3, b"ab": 4}, 2)
    assert result.merges == [(ord("z"), ord("z")), (ord("a"), ord("b"))]
    # (b, a) and (a, b) tie at 3: the smaller pair goes first; "aaa" merges left to right.
    assert train_bpe_from_counts({b"ba": 3, b"ab": 3}, 1).merges == [(97, 98)]
    result = train_bpe_from_counts({b"aaa": 5}, 2)
    assert result.merges == [(97, 97), (256, 97)] and result.vocab[257] == b"aaa"


# ----------------------------------------------------------------------------- rustbpe


def rustbpe_ranks(texts: list[str], n_merges: int, pattern: str) -> dict[bytes, int]:
    rustbpe = pytest.importorskip("rustbpe")
    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(iter(texts), 256 + n_merges, pattern=pattern)
    return dict(tok.get_mergeable_ranks())


@pytest.mark.parametrize(
    "texts",
    [["zzz"] * 3 + ["ab"] * 4, ["ba ab"] * 3, ["aaa aaaa aaaaa"] * 2, SYNTHETIC],
    ids=["overlap", "tie", "runs", "synthetic"],
)
def test_toy_corpora_match_rustbpe(texts: list[str]) -> None:
    pattern = get_pattern("gpt4").tiktoken
    ours = train_bpe(texts, 40, pattern)
    assert ours.ranks == rustbpe_ranks(texts, len(ours.merges), pattern)


def test_megabyte_corpus_ranks_equal_rustbpe(megabyte_corpus: list[str]) -> None:
    # Same counting rule, same tie-break (max count, then smallest pair): identical ranks.
    pattern = get_pattern("gpt4").tiktoken
    ours = train_bpe(megabyte_corpus, 2048 - 256, pattern)
    assert ours.ranks == rustbpe_ranks(megabyte_corpus, 2048 - 256, pattern)


# ----------------------------------------------------------------------------- HF tokenizers


def test_bytes_per_token_close_to_hf_bpe_trainer(megabyte_corpus: list[str]) -> None:
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    n_merges, pat = 2048 - 256, get_pattern("gpt4")
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pat.hf), behavior="isolated"),  # HF needs the non-possessive spelling
            pre_tokenizers.ByteLevel(use_regex=False, add_prefix_space=False),
        ]
    )
    hf_trainer = trainers.BpeTrainer(
        vocab_size=256 + n_merges, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    hf.train_from_iterator(megabyte_corpus, hf_trainer)
    assert hf.get_vocab_size() == 256 + n_merges
    ours = tiktoken_encoding(train_bpe(megabyte_corpus, n_merges, pat.tiktoken), pat.tiktoken)
    ours_bpt = bytes_per_token(megabyte_corpus, ours.encode_ordinary)
    hf_bpt = bytes_per_token(megabyte_corpus, lambda t: hf.encode(t, add_special_tokens=False).ids)
    assert abs(ours_bpt / hf_bpt - 1) < 0.005, (ours_bpt, hf_bpt)


# ----------------------------------------------------------------------------- contract and edges


def test_result_is_consistent_and_round_trips_through_tiktoken() -> None:
    pattern = get_pattern("gpt4").tiktoken
    result = train_bpe(small_corpus(), 200, pattern)
    assert len(result.vocab) == len(result.ranks) == 456
    for i, (left, right) in enumerate(result.merges):
        assert result.vocab[256 + i] == result.vocab[left] + result.vocab[right]
        assert result.ranks[result.vocab[256 + i]] == 256 + i
    enc = tiktoken_encoding(result, pattern)
    for text in SYNTHETIC:
        assert enc.decode(enc.encode_ordinary(text)) == text


def test_empty_corpus_and_zero_merges() -> None:
    pattern = get_pattern("gpt4").tiktoken
    for texts in ([], [""]):
        empty = train_bpe(texts, 100, pattern)
        assert empty.merges == [] and len(empty.vocab) == 256 and empty.n_words == empty.n_pieces == 0
        assert train_bpe_naive(texts, 100, pattern).merges == []
    zero = train_bpe(["hello hello"], 0, pattern)
    assert zero.merges == [] and zero.ranks == {bytes([i]): i for i in range(256)}
    assert (zero.n_words, zero.n_pieces) == (2, 2)  # "hello", " hello"


@pytest.mark.parametrize("fn", [train_bpe, train_bpe_naive])
def test_negative_merges_rejected(fn: Callable[..., TrainResult]) -> None:
    with pytest.raises(ValueError):
        fn(["abc"], -1, get_pattern("gpt4").tiktoken)
    with pytest.raises(ValueError):
        train_bpe_from_counts({b"ab": 1}, -1)


def test_special_tokens_are_boundaries_and_dropped() -> None:
    pattern = get_pattern("gpt4").tiktoken
    texts = ["xy<|endoftext|>xy<|end|>xy"] * 5
    counts = count_words(texts, pattern, ["<|end|>", "<|endoftext|>"])
    assert counts == {b"xy": 15}
    result = train_bpe(texts, 10, pattern, ["<|endoftext|>", "<|end|>"])
    assert result.merges == [(ord("x"), ord("y"))]
    assert result.merges == train_bpe_naive(texts, 10, pattern, ["<|endoftext|>", "<|end|>"]).merges


def test_from_counts_equals_from_texts_and_progress_is_sparse() -> None:
    pattern = get_pattern("gpt2").tiktoken
    texts = small_corpus()
    calls: list[tuple[int, int]] = []
    from_counts = train_bpe_from_counts(count_words(texts, pattern), 1000, progress=lambda d, t: calls.append((d, t)))
    assert from_counts == train_bpe(texts, 1000, pattern)
    assert 1 <= len(calls) <= trainer.PROGRESS_CALLS + 1 and calls[-1] == (1000, 1000)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_multiprocess_count_equals_single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainer, "BATCH_CHARS", 4096)  # many batches over 2 processes
    pattern = get_pattern("o200k").tiktoken
    texts = small_corpus() * 2
    single = count_words(texts, pattern, workers=1)
    assert count_words(texts, pattern, ["def"], workers=2) == count_words(texts, pattern, ["def"], workers=1)
    assert count_words(texts, pattern, workers=2) == single
    assert sum(single.values()) == train_bpe(texts, 0, pattern).n_pieces


def test_auto_workers_keeps_every_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainer, "BATCH_CHARS", 10)
    monkeypatch.setattr(trainer, "AUTO_PARALLEL_CHARS", 25)
    texts = [f"text number {i}" for i in range(10)]
    workers, batches = trainer._auto_workers(trainer._batches(texts))
    assert [t for batch, _ in batches for t in batch] == texts
    assert workers == (2 if (trainer.os.cpu_count() or 1) > 1 else 1)
    small, _ = trainer._auto_workers(trainer._batches(texts[:1]))
    assert small == 1
