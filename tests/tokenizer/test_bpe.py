"""Both engines against tiktoken itself: the whole pydocs corpus and generated strings."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmkit.tokenizer import Tokenizer
from llmkit.tokenizer.bpe import _bpe_merge_heap, bpe_merge

NAMES = ["gpt2", "cl100k_base", "o200k_base"]


@pytest.fixture(scope="module", params=NAMES)
def pair(request, tiktoken_reference):
    name = request.param
    fast = Tokenizer.from_pretrained(name, engine="fast")
    return name, fast, fast.with_engine("python"), tiktoken_reference[name]


def test_named_encodings_have_tiktokens_vocabulary(pair):
    _, fast, _, ref = pair
    assert fast.n_vocab == ref.n_vocab
    assert fast.special_tokens == ref._special_tokens
    assert fast.ranks == ref._mergeable_ranks


def test_gpt2_has_50257_tokens():
    assert Tokenizer.from_pretrained("gpt2").n_vocab == 50257


def test_known_ids():
    # Published ids: "Hello world" in GPT-2, "hello world" in cl100k_base.
    assert Tokenizer.from_pretrained("gpt2").encode("Hello world") == [15496, 995]
    assert Tokenizer.from_pretrained("cl100k_base", engine="python").encode("hello world") == [15339, 1917]


def test_whole_pydocs_corpus_matches_tiktoken(pair, pydocs_texts):
    name, fast, python, ref = pair
    expected = ref.encode_ordinary_batch(pydocs_texts)
    assert fast.encode_batch(pydocs_texts).input_ids == expected
    mismatched = [i for i, t in enumerate(pydocs_texts) if python.encode(t) != expected[i]]
    assert mismatched == [], f"{name}: python engine differs on {len(mismatched)} documents"


_TRICKY = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.sampled_from(" \t\n\r\x0b\x0c\u00a0\u3000"), max_size=200),
    st.builds(lambda c, n: c * n, st.text(min_size=1, max_size=3), st.integers(1, 400)),
    st.from_regex(r"[0-9 ,.]{0,80}", fullmatch=True),
    st.text(alphabet=st.sampled_from(list("🤖👍🏽🇫🇷é́ßΣσς日本語ab'sLL ")), max_size=120),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=200),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_TRICKY)
def test_generated_strings_match_tiktoken(tiktoken_reference, text):
    for name in NAMES:
        ref = tiktoken_reference[name]
        fast = _tok(name, "fast")
        python = _tok(name, "python")
        expected = ref.encode_ordinary(text)
        assert fast.encode(text) == expected, name
        assert python.encode(text) == expected, name
        assert python.decode(expected) == text


_CACHE: dict[tuple[str, str], Tokenizer] = {}


def _tok(name: str, engine: str) -> Tokenizer:
    if (name, engine) not in _CACHE:
        _CACHE[name, engine] = Tokenizer.from_pretrained(name, engine=engine)
    return _CACHE[name, engine]


@pytest.mark.parametrize("engine", ["python", "fast"])
def test_special_tokens_are_text_unless_allowed(tiktoken_reference, engine):
    ref = tiktoken_reference["cl100k_base"]
    tok = Tokenizer.from_pretrained("cl100k_base", engine=engine)
    text = "a<|endoftext|>b <|fim_prefix|><|endofprompt|>"
    assert tok.encode(text) == ref.encode_ordinary(text)
    assert 100257 not in tok.encode(text)
    assert tok.encode(text, allowed_special="all") == ref.encode(text, allowed_special="all")
    only = tok.encode(text, allowed_special={"<|endoftext|>"})
    assert only == ref.encode(text, allowed_special={"<|endoftext|>"}, disallowed_special=())
    assert tok.decode(tok.encode(text, allowed_special="all")) == text
    with pytest.raises(ValueError, match="not special tokens"):
        tok.encode(text, allowed_special={"<|nope|>"})


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=65, max_size=400))
def test_heap_merge_equals_scanning_merge(data):
    ranks = _tok("cl100k_base", "python").ranks
    assert _bpe_merge_heap(data, ranks) == _scan(data, ranks)


def _scan(piece: bytes, ranks) -> list[int]:
    # the textbook loop, forced even for long pieces
    parts = [piece[i : i + 1] for i in range(len(piece))]
    while True:
        cands = [(ranks[parts[i] + parts[i + 1]], i) for i in range(len(parts) - 1) if parts[i] + parts[i + 1] in ranks]
        if not cands:
            return [ranks[p] for p in parts]
        _, i = min(cands)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]


def test_long_repeats_are_fast_enough_and_exact(tiktoken_reference):
    text = "a" * 20000 + " " * 5000 + "ab" * 3000
    ref = tiktoken_reference["o200k_base"]
    assert _tok("o200k_base", "python").encode(text) == ref.encode_ordinary(text)
    assert bpe_merge(b"x" * 10, {bytes([i]): i for i in range(256)}) == [ord("x")] * 10


def test_decode_rejects_unknown_ids():
    tok = Tokenizer.from_pretrained("gpt2")
    with pytest.raises(ValueError, match="unknown token id 50257"):
        tok.decode([1, 50257])


def test_lone_surrogates_are_replaced_like_tiktoken(tiktoken_reference):
    text = "a\ud800b"
    ref = tiktoken_reference["cl100k_base"]
    for engine in ("python", "fast"):
        assert Tokenizer.from_pretrained("cl100k_base", engine=engine).encode(text) == ref.encode_ordinary(text)
