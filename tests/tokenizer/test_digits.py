"""Numbers split into single digits: the ``-digits`` split patterns and ``Tokenizer.with_pattern``."""

from __future__ import annotations

import pytest
import regex

from llmkit.tokenizer import Tokenizer
from llmkit.tokenizer.patterns import GPT2, GPT4, O200K, SplitPattern, get_pattern, single_digits

TEXT = "In 2024, 4821 * 377 = 1817517; x2y3 costs $12.50 (v3.11) and ١٢٣ too."


@pytest.mark.parametrize("base", [GPT2, GPT4, O200K], ids=lambda p: p.name)
def test_single_digits_splits_numbers_and_nothing_else(base):
    p = single_digits(base)
    assert p.name == base.name + "-digits" and single_digits(p) == p
    for rx in filter(None, (p.tiktoken, p.hf, p.python)):
        pieces = regex.findall(rx, TEXT)
        assert "".join(pieces) == TEXT  # a split loses nothing
        assert all(len(piece) == 1 for piece in pieces if any(ch.isdigit() for ch in piece))
        # everything that is not a number splits as before (numbers and bare spaces removed from both
        # sides: gpt2 glued a space to a number, and that space now stands alone)
        old = [x for x in regex.findall(base.tiktoken, TEXT) if not any(ch.isdigit() for ch in x) and x.strip()]
        new = [x for x in pieces if not any(ch.isdigit() for ch in x) and x.strip()]
        assert new == old
    assert get_pattern("gpt4-digits") == single_digits(GPT4)
    with pytest.raises(ValueError, match="no number rule"):
        single_digits(SplitPattern("words", r"\p{L}+|\s+", r"\p{L}+|\s+"))


def test_with_pattern_keeps_ranks_and_specials_and_matches_tiktoken():
    tok = Tokenizer.train([TEXT * 20, "numbers 123 456 7890 " * 50], 300, special_tokens=("<|endoftext|>",))
    assert any(len(tok.decode([i])) > 1 and tok.decode([i]).isdigit() for i in tok.encode("123 456 7890"))  # merged digits
    d = tok.with_pattern("gpt4-digits")
    assert d.ranks == tok.ranks and d.special_tokens == tok.special_tokens and d.pattern.name == "gpt4-digits"
    ids = d.encode("7890 and 123<|endoftext|>", allowed_special="all")
    assert [d.decode([i]) for i in ids][:4] == ["7", "8", "9", "0"] and d.decode(ids) == "7890 and 123<|endoftext|>"
    assert ids == d.to_tiktoken().encode("7890 and 123<|endoftext|>", allowed_special="all")
    assert d.with_engine("python").encode("x 4821 y") == d.encode("x 4821 y")


def test_a_digits_tokenizer_saves_and_loads(tmp_path):
    tok = Tokenizer.train(["a 12 b 345 " * 40], 270).with_pattern(single_digits(GPT2))
    tok.save(tmp_path / "t")
    back = Tokenizer.load(tmp_path / "t")
    assert back.pattern.name == "gpt2-digits" and back.encode("x 345 12") == tok.encode("x 345 12")
