"""Batch encoding: padding, truncation and overlapping windows, checked against HF's
tokenizer (the same ids through ``PreTrainedTokenizerFast``) and by reconstruction."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmkit.tokenizer import Tokenizer
from llmkit.tokenizer.batch import windows

TEXTS = ["Hello world", "The quick brown fox jumps over the lazy dog. " * 5, "", "é🤖"]


@pytest.fixture(scope="module")
def gpt2():
    return Tokenizer.from_pretrained("gpt2")


def test_padding_longest_right_and_left(gpt2):
    enc = gpt2.encode_batch(TEXTS, padding=True)
    n = max(len(gpt2.encode(t)) for t in TEXTS)
    assert all(len(r) == n for r in enc.input_ids)
    for t, ids, mask in zip(TEXTS, enc.input_ids, enc.attention_mask):
        k = len(gpt2.encode(t))
        assert ids[:k] == gpt2.encode(t) and mask == [1] * k + [0] * (n - k)
        assert set(ids[k:]) <= {50256}
    left = gpt2.encode_batch(TEXTS, padding="longest", padding_side="left")
    assert [r[n - len(gpt2.encode(t)) :] for r, t in zip(left.input_ids, TEXTS)] == [gpt2.encode(t) for t in TEXTS]


def test_truncation_and_max_length_padding_match_hf(gpt2):
    from tokenizers import Tokenizer as HFTokenizer
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=HFTokenizer.from_str(gpt2.to_hf_json()), pad_token="<|endoftext|>")
    ours = gpt2.encode_batch(TEXTS, padding="max_length", truncation=True, max_length=12)
    theirs = hf(TEXTS, padding="max_length", truncation=True, max_length=12)
    assert ours.input_ids == theirs["input_ids"]
    assert ours.attention_mask == theirs["attention_mask"]


def test_overflow_windows_match_hf(gpt2):
    from tokenizers import Tokenizer as HFTokenizer
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=HFTokenizer.from_str(gpt2.to_hf_json()), pad_token="<|endoftext|>")
    kw = dict(truncation=True, max_length=16, stride=4, return_overflowing_tokens=True, padding=True)
    ours = gpt2.encode_batch(TEXTS, **kw)
    theirs = hf(TEXTS, **kw)
    assert ours.input_ids == theirs["input_ids"]
    assert ours.attention_mask == theirs["attention_mask"]
    assert ours.overflow_to_sample_mapping == theirs["overflow_to_sample_mapping"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 9), max_size=60), st.integers(1, 20), st.integers(0, 19))
def test_windows_cover_everything_with_the_stride_overlap(ids, max_length, stride):
    stride = min(stride, max_length - 1)
    ws = windows(ids, max_length, stride)
    assert all(1 <= len(w) <= max_length for w in ws) or ids == []
    rebuilt = list(ws[0])
    for prev, w in zip(ws, ws[1:]):
        assert w[:stride] == prev[len(prev) - stride :] if stride else True
        rebuilt.extend(w[stride:])
    assert rebuilt == ids


def test_tensors(gpt2):
    torch = pytest.importorskip("torch")
    t = gpt2.encode_batch(TEXTS, padding=True).to_tensors("pt")
    assert t["input_ids"].dtype == torch.long and t["input_ids"].shape == t["attention_mask"].shape
    with pytest.raises(ValueError, match="padding=True"):
        gpt2.encode_batch(TEXTS).to_tensors()


def test_bad_arguments(gpt2):
    with pytest.raises(ValueError, match="max_length"):
        gpt2.encode_batch(TEXTS, truncation=True)
    with pytest.raises(ValueError, match="stride"):
        gpt2.encode_batch(TEXTS, max_length=4, stride=4, return_overflowing_tokens=True)
    with pytest.raises(ValueError, match="padding must be"):
        gpt2.encode_batch(TEXTS, padding="sideways")
    with pytest.raises(TypeError, match="list of strings"):
        gpt2.encode_batch("one string")
    nopad = Tokenizer(gpt2.ranks, gpt2.pattern, {})
    with pytest.raises(ValueError, match="pad token"):
        nopad.encode_batch(TEXTS, padding=True)
    assert nopad.encode_batch(TEXTS, padding=True, pad_id=0).attention_mask[2] == [0] * len(nopad.encode(TEXTS[1]))


def test_engines_agree_on_batches():
    tok = Tokenizer.from_pretrained("o200k_base")
    kw = dict(truncation=True, max_length=8, stride=2, return_overflowing_tokens=True, padding=True, allowed_special="all")
    texts = TEXTS + ["a<|endoftext|>b"]
    assert tok.encode_batch(texts, **kw) == tok.with_engine("python").encode_batch(texts, **kw)
