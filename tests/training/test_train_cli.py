"""``llmkit train`` for every model kind, and its errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from llmkit.cli.main import app

runner = CliRunner()


def _train(out, corpus, tokenizer, *extra):
    return runner.invoke(app, ["train", "-o", str(out), "--corpus", str(corpus), "--tokenizer", str(tokenizer),
                               "--steps", "6", "--batch-size", "4", "--block-size", "32", "--eval-every", "3", "--log-every", "3",
                               "--device", "cpu", *extra])


@pytest.mark.parametrize("kind", ["gpt", "bert", "lstm", "nplm", "ngram"])
def test_every_kind_trains_and_saves_a_loadable_model(kind, tmp_path, small_corpus, small_tokenizer):
    import torch

    from llmkit.models.zoo import load_model

    r = _train(tmp_path / kind, small_corpus, small_tokenizer, "--model", kind)
    assert r.exit_code == 0, r.output
    records = [json.loads(ln) for ln in (tmp_path / kind / "metrics.jsonl").read_text().splitlines()]
    assert "val_bits_per_token" in records[-1]
    model = load_model(tmp_path / kind / "model")
    x = torch.randint(0, 300, (1, 8))
    logits, _ = model(x)
    assert logits.shape[:2] == (1, 8)
    if kind == "bert":  # the tokenizer gained BERT's special tokens
        tok = json.loads((tmp_path / kind / "model" / "llmkit_tokenizer.json").read_text())
        assert {"[CLS]", "[SEP]", "[MASK]", "[PAD]"} <= set(tok["special_tokens"])


def test_existing_run_needs_resume_or_force(tmp_path, small_corpus, small_tokenizer):
    assert _train(tmp_path / "r", small_corpus, small_tokenizer).exit_code == 0
    again = _train(tmp_path / "r", small_corpus, small_tokenizer)
    assert again.exit_code == 1 and "--resume" in again.stderr
    assert _train(tmp_path / "r", small_corpus, small_tokenizer, "--force").exit_code == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "transformer-xl"], "unknown model kind"),
        (["--preset", "huge"], "unknown GPT preset"),
        (["--tokens", "1000"], "not both"),
    ],
)
def test_bad_arguments(args, message, tmp_path, small_corpus, small_tokenizer):
    r = _train(tmp_path / "x", small_corpus, small_tokenizer, *args)
    assert r.exit_code == 1 and message in r.stderr, r.output


def test_resume_of_a_missing_run(tmp_path):
    r = runner.invoke(app, ["train", "-o", str(tmp_path / "none"), "--resume"])
    assert r.exit_code == 1 and "not a training run" in r.stderr
