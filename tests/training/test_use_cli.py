"""Using a trained model from the command line: generate, chat, attention, compare."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from llmkit.cli.main import app

runner = CliRunner()


def test_generate_streams_a_seeded_continuation(tiny_run):
    args = ["generate", str(tiny_run), "def ", "-n", "20", "--seed", "3"]
    a, b = runner.invoke(app, args), runner.invoke(app, args)
    assert a.exit_code == 0, a.output
    assert a.stdout.startswith("def ") and a.stdout == b.stdout and len(a.stdout) > 5
    greedy = runner.invoke(app, ["generate", str(tiny_run / "model"), "import", "-n", "10", "--temperature", "0"])
    assert greedy.exit_code == 0 and greedy.stdout.startswith("import")


def test_generate_matches_the_library(tiny_run):
    from llmkit.generation import generate_text
    from llmkit.inference import load_pretrained

    model, tok, _ = load_pretrained(tiny_run)
    expected = generate_text(model, tok, "class ", 15, temperature=0.0)
    r = runner.invoke(app, ["generate", str(tiny_run), "class ", "-n", "15", "--temperature", "0"])
    assert r.stdout == "class " + expected + "\n"


def test_chat_answers_each_line_until_exit(tiny_run):
    r = runner.invoke(app, ["chat", str(tiny_run), "-n", "8", "--seed", "0"], input="hello\n/reset\nagain\n/exit\nignored\n")
    assert r.exit_code == 0, r.output
    assert r.stdout.count("> ") == 2


def test_attention_heatmap(tiny_run, tmp_path):
    out = tmp_path / "attn.png"
    r = runner.invoke(app, ["attention", str(tiny_run), "def f(x): return x", "-o", str(out), "--layer", "1", "--head", "3"])
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:4] == b"\x89PNG"
    again = runner.invoke(app, ["attention", str(tiny_run), "x", "-o", str(out)])
    assert again.exit_code == 1 and "--force" in again.stderr


def test_attention_weights_are_causal_rows_that_sum_to_one(tiny_run):
    import torch

    from llmkit.inference import attention_map, load_pretrained

    model, tok, _ = load_pretrained(tiny_run)
    w, labels = attention_map(model, tok, "for i in range(10): print(i)", 0, 0)
    assert w.shape == (len(labels), len(labels))
    assert torch.allclose(w.sum(-1), torch.ones(len(labels)), atol=1e-5) and torch.all(w.triu(1) == 0)
    assert "".join(labels) == "for i in range(10): print(i)"


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "/no/such/run", "x"], "neither a run directory"),
        (["attention", "RUN", "x", "-o", "OUT", "--head", "99"], "heads 0-3"),
        (["generate", "RUN", "x", "--temperature", "-1"], "temperature"),
        (["generate", "RUN", "x", "--top-p", "0"], "top_p"),
    ],
)
def test_errors(args, message, tiny_run, tmp_path):
    args = [str(tiny_run) if a == "RUN" else str(tmp_path / "o.png") if a == "OUT" else a for a in args]
    r = runner.invoke(app, args)
    assert r.exit_code == 1 and message in r.stderr, r.output


def test_compare_ranks_the_ladder_on_the_same_tokens(tmp_path, small_corpus, small_tokenizer):
    r = runner.invoke(app, ["compare", "--corpus", str(small_corpus), "-t", str(small_tokenizer), "--budget", "4k",
                            "--model", "ngram", "--model", "gpt", "-o", str(tmp_path / "cmp"), "--block-size", "32"])
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [row["model"] for row in rows] == ["ngram", "gpt"]
    assert all(row["val_bits_per_token"] > 0 and row["val_ppl"] > 1 for row in rows)
    assert (tmp_path / "cmp" / "compare.png").is_file() and "bits/token" in r.stdout
    bad = runner.invoke(app, ["compare", "--budget", "lots", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "budget" in bad.stderr
