"""Tokenizer directories: tiktoken and Hugging Face load what we save and agree with us."""

from __future__ import annotations

import json

import pytest

from llmkit.tokenizer import Tokenizer
from llmkit.tokenizer.files import bytes_to_unicode, format_tiktoken, load_gpt2_ranks, gpt2_files, parse_tiktoken
from llmkit.tokenizer.tokenizer import HF_FILE, META_FILE, RANKS_FILE

SPECIALS = ("<|endoftext|>", "<|pad|>")


@pytest.fixture(scope="module")
def trained(pydocs_texts, tmp_path_factory):
    """A 2,048-token tokenizer trained on 1 MB of pydocs, saved to a directory."""
    texts, size = [], 0
    for t in pydocs_texts:
        texts.append(t)
        size += len(t)
        if size > 1_000_000:
            break
    tok = Tokenizer.train(texts, 2048, pattern="gpt4", special_tokens=SPECIALS)
    d = tmp_path_factory.mktemp("tok")
    tok.save(d)
    return tok, d


def test_vocab_size_counts_bytes_merges_and_specials(trained):
    tok, _ = trained
    assert tok.n_vocab == 2048
    assert tok.special_tokens == {"<|endoftext|>": 2046, "<|pad|>": 2047}
    assert all(tok.ranks[bytes([b])] == b for b in range(256))


def test_saved_directory_reloads_identically(trained, pydocs_texts):
    tok, d = trained
    again = Tokenizer.load(d)
    assert again.ranks == tok.ranks and again.special_tokens == tok.special_tokens
    assert again.pattern == tok.pattern
    sample = pydocs_texts[:20]
    assert again.encode_batch(sample).input_ids == tok.encode_batch(sample).input_ids


def test_tiktoken_loads_the_rank_file(trained, pydocs_texts):
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    tok, d = trained
    ranks = load_tiktoken_bpe(str(d / RANKS_FILE))
    meta = json.loads((d / META_FILE).read_text())
    enc = tiktoken.Encoding("t", pat_str=meta["pattern"]["regex"], mergeable_ranks=ranks, special_tokens=meta["special_tokens"])
    assert enc.encode_ordinary_batch(pydocs_texts) == tok.with_engine("python").encode_batch(pydocs_texts).input_ids


def test_hf_fast_tokenizer_gives_the_same_ids_on_the_whole_corpus(trained, pydocs_texts):
    from transformers import PreTrainedTokenizerFast

    tok, d = trained
    hf = PreTrainedTokenizerFast(tokenizer_file=str(d / HF_FILE))
    got = hf(pydocs_texts, add_special_tokens=False)["input_ids"]
    assert got == tok.encode_batch(pydocs_texts).input_ids
    text = "x<|endoftext|>y<|pad|>"
    assert hf(text, add_special_tokens=False)["input_ids"] == tok.encode(text, allowed_special="all")
    assert hf.decode(tok.encode("héllo wörld 🤖")) == "héllo wörld 🤖"


def test_auto_tokenizer_loads_the_directory(trained):
    from transformers import AutoTokenizer

    tok, d = trained
    hf = AutoTokenizer.from_pretrained(str(d))
    assert hf.eos_token_id == tok.special_tokens["<|endoftext|>"]
    assert hf.pad_token_id == tok.special_tokens["<|pad|>"]
    assert hf("def main():\n    return 42\n")["input_ids"] == tok.encode("def main():\n    return 42\n")


def test_hf_split_spelling_matches_tiktoken_spelling_on_the_whole_corpus(pydocs_texts):
    """The HF-safe pattern spellings pre-tokenize every document exactly like tiktoken's."""
    import regex
    from tokenizers import Regex, pre_tokenizers

    from llmkit.tokenizer.patterns import PATTERNS

    for p in PATTERNS.values():
        split = pre_tokenizers.Split(Regex(p.hf), behavior="isolated", invert=False)
        rx = regex.compile(p.tiktoken)
        for text in pydocs_texts:
            assert [s for s, _ in split.pre_tokenize_str(text)] == rx.findall(text), (p.name, text[:60])


def test_python_spellings_split_like_tiktoken_on_the_whole_corpus(pydocs_texts):
    import regex

    from llmkit.tokenizer.patterns import PATTERNS

    for p in PATTERNS.values():
        if p.python:
            fast, ref = regex.compile(p.python), regex.compile(p.tiktoken)
            for text in pydocs_texts:
                assert fast.findall(text) == ref.findall(text), (p.name, text[:60])


def test_hf_possessive_spelling_would_differ(pydocs_texts):
    """Why the HF spelling exists: HF's engine splits tiktoken's own cl100k regex differently."""
    import regex
    from tokenizers import Regex, pre_tokenizers

    from llmkit.tokenizer.patterns import GPT4

    split = pre_tokenizers.Split(Regex(GPT4.tiktoken), behavior="isolated", invert=False)
    rx = regex.compile(GPT4.tiktoken)
    differing = sum([s for s, _ in split.pre_tokenize_str(t)] != rx.findall(t) for t in pydocs_texts[:50])
    assert differing > 0


@pytest.mark.parametrize("name", ["gpt2", "cl100k_base", "o200k_base"])
def test_named_encoding_exports_to_hf_with_identical_ids(name, pydocs_texts):
    from tokenizers import Tokenizer as HFTokenizer

    tok = Tokenizer.from_pretrained(name)
    hf = HFTokenizer.from_str(tok.to_hf_json())
    texts = pydocs_texts[:60]
    assert [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)] == tok.encode_batch(texts).input_ids


def test_gpt2_files_are_consistent_merge_lists():
    encoder_json, vocab_bpe = gpt2_files()
    ranks = load_gpt2_ranks(encoder_json, vocab_bpe)  # checks merge i -> id 256 + i
    assert len(ranks) == 50256
    assert len(bytes_to_unicode()) == 256 and len(set(bytes_to_unicode().values())) == 256


def test_rank_file_round_trip_and_errors():
    ranks = {bytes([i]): i for i in range(256)} | {b"ab": 256}
    assert parse_tiktoken(format_tiktoken(ranks)) == ranks
    with pytest.raises(ValueError, match="line 2"):
        parse_tiktoken(b"YQ== 0\nnot-base64!! 1\n")


def test_save_refuses_to_overwrite(trained, tmp_path):
    tok, _ = trained
    tok.save(tmp_path)
    before = (tmp_path / RANKS_FILE).read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        tok.save(tmp_path)
    assert (tmp_path / RANKS_FILE).read_bytes() == before
    tok.save(tmp_path, overwrite=True)


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="unknown tokenizer"):
        Tokenizer.from_pretrained(tmp_path / "nope")
    (tmp_path / RANKS_FILE).write_bytes(b"garbage\n")
    with pytest.raises(FileNotFoundError, match="missing llmkit_tokenizer.json"):
        Tokenizer.load(tmp_path)
    (tmp_path / META_FILE).write_text("{}")
    with pytest.raises(ValueError, match="corrupt"):
        Tokenizer.load(tmp_path)


def test_invalid_vocab_size_and_ranks():
    with pytest.raises(ValueError, match="too small"):
        Tokenizer.train(["abc"], 256, special_tokens=("<|endoftext|>",))
    with pytest.raises(ValueError, match="single bytes"):
        Tokenizer({b"a": 0}, "gpt4")


def test_add_special_tokens_appends_ids_and_round_trips(tmp_path):
    gpt2 = Tokenizer.from_pretrained("gpt2")
    bert_like = gpt2.add_special_tokens(["[CLS]", "[SEP]", "[MASK]", "[PAD]", "<|endoftext|>"])
    assert bert_like.special_tokens == {"<|endoftext|>": 50256, "[CLS]": 50257, "[SEP]": 50258, "[MASK]": 50259, "[PAD]": 50260}
    assert bert_like.n_vocab == 50261
    text = "[CLS] hi [SEP]"
    assert bert_like.encode(text) == gpt2.encode(text)  # safe default: ordinary text
    assert bert_like.encode(text, allowed_special="all") == [50257, 23105, 220, 50258]
    bert_like.save(tmp_path)
    assert Tokenizer.load(tmp_path).special_tokens == bert_like.special_tokens
