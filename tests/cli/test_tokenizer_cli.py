"""``llmkit tokenizer ...`` as a user runs it: output formats, one-line errors, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from llmkit.cli.main import app

runner = CliRunner()


def run(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def test_encode_prints_a_json_list():
    r = run("tokenizer", "encode", "--tokenizer", "gpt2", "Hello world")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == [15496, 995]


@pytest.mark.parametrize("engine", ["python", "fast"])
def test_encode_decode_round_trip_from_files(tmp_path, engine):
    src = tmp_path / "in.txt"
    src.write_text("Ünïcödé text\n  with <|endoftext|> and 12345 🤖", encoding="utf-8")
    r = run("tokenizer", "encode", "-t", "cl100k_base", "--engine", engine, "--file", str(src))
    assert r.exit_code == 0, r.output
    ids = json.loads(r.stdout)
    assert 100257 not in ids
    ids_file = tmp_path / "ids.json"
    ids_file.write_text(r.stdout)
    d = run("tokenizer", "decode", "-t", "cl100k_base", "--file", str(ids_file))
    assert d.exit_code == 0 and d.stdout == src.read_text(encoding="utf-8") + "\n"


def test_allow_special_and_space_separated_ids():
    r = run("tokenizer", "encode", "-t", "gpt2", "--allow-special", "a<|endoftext|>")
    assert json.loads(r.stdout) == [64, 50256]
    assert run("tokenizer", "decode", "-t", "gpt2", "64 50256").stdout == "a<|endoftext|>\n"


def test_show_prints_boundaries_and_ids():
    r = run("tokenizer", "show", "-t", "gpt2", "hello world")
    assert r.exit_code == 0
    assert "['hello', ' world']" in r.stdout and "[31373, 995]" in r.stdout


def test_show_never_splits_a_character_into_garbage():
    from llmkit.tokenizer import Tokenizer
    from llmkit.tokenizer.display import token_pieces

    tok = Tokenizer.from_pretrained("gpt2")
    text = "日本語 🤖 é"
    pieces = token_pieces(tok, tok.encode(text))
    assert "".join(pieces) == text and len(pieces) == len(tok.encode(text))


@pytest.mark.parametrize(
    "args, message",
    [
        (["tokenizer", "encode", "-t", "nope", "x"], "unknown tokenizer 'nope'"),
        (["tokenizer", "encode", "-t", "gpt2"], "give either TEXT or --file"),
        (["tokenizer", "encode", "-t", "gpt2", "--engine", "rust", "x"], "unknown engine"),
        (["tokenizer", "decode", "-t", "gpt2", "[1, 99999999]"], "unknown token id 99999999"),
        (["tokenizer", "decode", "-t", "gpt2", "one two"], "ids must be"),
        (["tokenizer", "encode", "-t", "gpt2", "--file", "/no/such/file"], "cannot read /no/such/file"),
        (["tokenizer", "train", "--vocab-size", "100", "-o", "OUT", "--corpus", "pydocs"], "too small"),
        (["tokenizer", "train", "--vocab-size", "300", "-o", "OUT", "--pattern", "gpt5"], "unknown split pattern"),
        (["tokenizer", "train", "--vocab-size", "300", "-o", "OUT", "--corpus", "/no/such/dir"], "no such corpus"),
    ],
)
def test_bad_input_gives_one_line_error_and_exit_1(args, message, tmp_path):
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    r = run(*args)
    assert r.exit_code == 1, r.output
    err = r.stderr.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in r.output


def test_non_utf8_file_is_a_clear_error(tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes(b"caf\xe9")
    r = run("tokenizer", "encode", "-t", "gpt2", "--file", str(f))
    assert r.exit_code == 1 and "not valid UTF-8" in r.stderr


def test_train_writes_a_loadable_tokenizer_and_refuses_to_overwrite(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    import inspect
    import json as json_module

    (corpus / "a.txt").write_text("the cat sat on the mat. " * 200, encoding="utf-8")
    (corpus / "b.md").write_text(inspect.getsource(json_module), encoding="utf-8")
    out = tmp_path / "tok"
    r = run("tokenizer", "train", "--corpus", str(corpus), "--vocab-size", "300", "--special", "<|endoftext|>", "--special", "<|pad|>", "-o", str(out))
    assert r.exit_code == 0, r.output
    from llmkit.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(out)
    assert tok.n_vocab == 300 and tok.special_tokens == {"<|endoftext|>": 298, "<|pad|>": 299}
    assert len(tok.encode("the cat sat on the mat.")) < 10
    again = run("tokenizer", "train", "--corpus", str(corpus), "--vocab-size", "300", "-o", str(out))
    assert again.exit_code == 1 and "--force" in again.stderr
    assert Tokenizer.from_pretrained(out).special_tokens == tok.special_tokens  # untouched
    forced = run("tokenizer", "train", "--corpus", str(corpus), "--vocab-size", "290", "-o", str(out), "--force")
    assert forced.exit_code == 0 and Tokenizer.from_pretrained(out).n_vocab == 290


def test_train_warns_when_the_corpus_runs_out_of_pairs(tmp_path):
    f = tmp_path / "tiny.txt"
    f.write_text("ab ab ab", encoding="utf-8")
    r = run("tokenizer", "train", "--corpus", str(f), "--vocab-size", "400", "-o", str(tmp_path / "t"))
    assert r.exit_code == 0 and "ran out of pairs" in r.stderr


def test_stats_compares_with_the_named_encodings(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("Tokenizers split text into tokens. " * 50, encoding="utf-8")
    r = run("tokenizer", "stats", "--corpus", str(f), "--json")
    assert r.exit_code == 0, r.output
    rows = {row["tokenizer"]: row for row in json.loads(r.stdout)}
    assert set(rows) == {"gpt2", "cl100k_base", "o200k_base"}
    assert all(row["n_bytes"] == len(f.read_text()) for row in rows.values())
    table = run("tokenizer", "stats", "--corpus", str(f), "-t", "gpt2")
    assert "bytes/token" in table.stdout


def test_cli_starts_without_heavy_imports():
    code = (
        "import sys; from llmkit.cli.main import app; "
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'sentence_transformers', 'tokenizers') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    r = subprocess.run([sys.executable, "-m", "llmkit.cli.main", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "tokenizer" in r.stdout and "speedrun" in r.stdout
