"""A small corpus and a 320-token tokenizer, so training runs take seconds."""

from __future__ import annotations

import inspect

import pytest


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    import collections
    import json
    import textwrap

    d = tmp_path_factory.mktemp("corpus")
    for mod in (json, collections, textwrap, inspect):
        (d / f"{mod.__name__}.py").write_text(inspect.getsource(mod), encoding="utf-8")
    return d


@pytest.fixture(scope="session")
def small_tokenizer(small_corpus, tmp_path_factory):
    from llmkit.data.corpora import load_corpus
    from llmkit.tokenizer import Tokenizer

    out = tmp_path_factory.mktemp("tok")
    Tokenizer.train(load_corpus(str(small_corpus)).texts(), 320).save(out, overwrite=True)
    return out


@pytest.fixture(scope="session")
def tiny_run(small_corpus, small_tokenizer, tmp_path_factory):
    """A GPT trained for 20 steps on the small corpus (a run directory)."""
    from typer.testing import CliRunner

    from llmkit.cli.main import app

    out = tmp_path_factory.mktemp("runs") / "gpt"
    r = CliRunner().invoke(app, ["train", "-o", str(out), "--corpus", str(small_corpus), "--tokenizer", str(small_tokenizer),
                                 "--steps", "20", "--batch-size", "8", "--block-size", "32", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    return out
