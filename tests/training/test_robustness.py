"""Bad input and damaged files: one-line errors, exit 1, and nothing lost."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from llmkit.cli.main import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _one_line_error(r, message):
    assert r.exit_code == 1, r.output
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]  # progress lines may precede it
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in r.output, r.stderr


def _train_args(out, corpus, tok, *extra):
    return ["train", "-o", out, "--corpus", corpus, "--tokenizer", tok, "--steps", "4", "--batch-size", "4",
            "--block-size", "32", "--eval-every", "2", "--ckpt-every", "2", "--device", "cpu", *extra]


@pytest.fixture
def trained(tmp_path, small_corpus, small_tokenizer):
    out = tmp_path / "run"
    r = run(*_train_args(out, small_corpus, small_tokenizer))
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--eval-every", "0"], "eval-every must be >= 1"),
        (["--log-every", "0"], "log-every must be >= 1"),
        (["--ckpt-every", "0"], "ckpt-every must be >= 1"),
        (["--stride", "0"], "stride must be >= 1"),
        (["--warmup", "-5"], "warm-up steps must be >= 0"),
        (["--device", "bogus"], "unknown device"),
        (["--device", "cuda"], "CUDA is not available"),
        (["--dtype", "bogus"], "unknown dtype"),
        (["--lr", "nan"], "finite lr"),
        (["--tokens", "0", "--steps", None], "--tokens must be >= 1"),
        (["--nproc", "0"], "--nproc must be >= 1"),
        (["--block-size", "1000"], "longer than the tiny gpt's context length 128"),
    ],
)
def test_bad_training_settings_fail_before_anything_is_written(extra, message, tmp_path, small_corpus, small_tokenizer):
    args = _train_args(tmp_path / "new", small_corpus, small_tokenizer)
    if None in extra:  # drop --steps
        i = args.index("--steps")
        del args[i : i + 2]
        extra = [e for e in extra if e is not None][:-1]
    if "--block-size" in extra:
        i = args.index("--block-size")
        del args[i : i + 2]
    _one_line_error(run(*args, *extra), message)
    assert not (tmp_path / "new").exists()


def test_a_corpus_too_small_for_one_window_leaves_no_run(tmp_path, small_tokenizer):
    f = tmp_path / "tiny.txt"
    f.write_text("just a few words", encoding="utf-8")
    _one_line_error(run(*_train_args(tmp_path / "r", f, small_tokenizer)), "too few for one window")
    assert not (tmp_path / "r").exists()


def test_train_never_writes_into_a_foreign_directory(tmp_path, small_corpus, small_tokenizer):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    _one_line_error(run(*_train_args(foreign, small_corpus, small_tokenizer)), "holds no llmkit run")
    _one_line_error(run(*_train_args(foreign, small_corpus, small_tokenizer, "--force")), "holds no llmkit run")
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_resume_cannot_change_the_plan(trained):
    _one_line_error(run("train", "-o", trained, "--resume", "--steps", "10"), "cannot change it")


def test_corrupt_latest_pointer_falls_back_to_the_newest_checkpoint(trained):
    from llmkit.training.checkpoint import latest_checkpoint

    (trained / "checkpoints" / "latest.json").write_text("{bad")
    assert latest_checkpoint(trained).name == "step_00000004"
    (trained / "checkpoints" / "latest.json").write_text(json.dumps({"dir": "../../elsewhere/step_00000001"}))
    assert latest_checkpoint(trained).name == "step_00000004"  # never follows a path out of the run


def test_truncated_checkpoint_is_named(trained):
    f = trained / "checkpoints" / "step_00000004" / "optimizer.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    r = run("train", "-o", trained, "--resume")
    _one_line_error(r, "step_00000004 is unreadable")


def test_corrupt_run_and_model_files_are_named(trained):
    model = trained / "model" / "model.safetensors"
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 2])
    _one_line_error(run("generate", trained, "x"), "corrupt or truncated")
    (trained / "run.json").write_text("[1, 2]")
    _one_line_error(run("train", "-o", trained, "--resume"), "run.json is corrupt")


def test_compare_never_overwrites_a_training_run_or_earlier_results(trained, tmp_path, small_corpus, small_tokenizer):
    before = (trained / "tokens" / "train.bin").read_bytes()
    _one_line_error(run("compare", "--corpus", small_corpus, "-t", small_tokenizer, "--budget", "1k", "--model", "ngram", "-o", trained), "is a training run")
    assert (trained / "tokens" / "train.bin").read_bytes() == before
    out = tmp_path / "cmp"
    args = ["compare", "--corpus", small_corpus, "-t", small_tokenizer, "--budget", "1k", "--model", "ngram", "-o", out, "--block-size", "16"]
    assert run(*args).exit_code == 0
    _one_line_error(run(*args), "--force")
    assert run(*args, "--force").exit_code == 0
    _one_line_error(run("compare", "--budget", "1e400", "-o", tmp_path / "x"), "budget must be between")
    _one_line_error(run("compare", "--block-size", "0", "-o", tmp_path / "y"), "--block-size must be >= 1")


def test_tokenizer_defects(tmp_path, small_corpus, small_tokenizer):
    _one_line_error(run("tokenizer", "train", "--corpus", small_corpus, "--vocab-size", "300", "-o", tmp_path / "t", "--special", ""), "non-empty")
    r = run("tokenizer", "show", "-t", "gpt2", "x [/b] y")
    assert r.exit_code == 0 and "[/b]" in r.stdout
    bad = tmp_path / "trunc"
    shutil.copytree(small_tokenizer, bad)
    lines = (bad / "tokenizer.tiktoken").read_text().splitlines()
    (bad / "tokenizer.tiktoken").write_text("\n".join(lines[:270]) + "\n")
    _one_line_error(run("tokenizer", "encode", "-t", bad, "hi"), "truncated or mixed up")
    _one_line_error(run("tokenizer", "stats", "--corpus", "pydocs+", "--max-mb", "1"), "empty part")
    _one_line_error(run("tokenizer", "stats", "--max-mb", "-1"), "--max-mb must be >= 0")


def test_output_paths_name_the_file(tmp_path, small_corpus):
    f = tmp_path / "a-file"
    f.write_text("x")
    r = run("tokenizer", "train", "--corpus", small_corpus, "--vocab-size", "260", "-o", f / "sub")
    assert r.exit_code == 1 and "a-file" in r.stderr and "Errno" not in r.stderr


def test_speedrun_redoes_a_stage_whose_outputs_are_gone(tmp_path):
    from llmkit import speedrun
    from llmkit.speedrun import SpeedrunConfig, run_speedrun

    corpus = tmp_path / "c.txt"
    corpus.write_text(" ".join(f"w{i % 50} v{i % 7}." for i in range(3000)), encoding="utf-8")
    cfg = SpeedrunConfig(out_dir=tmp_path / "sr", quick=True, corpus=str(corpus), quick_vocab_size=280, quick_pretrain_steps=3, quick_compare_budget=300,
                         quick_agent_steps=3)
    run_speedrun(cfg, log=lambda m: None)
    shutil.rmtree(tmp_path / "sr" / "tokenizer")
    logs: list[str] = []
    run_speedrun(cfg, log=logs.append)
    assert "[run ] 2. Tokenizer training" in logs
    assert (tmp_path / "sr" / "tokenizer" / "tokenizer.tiktoken").exists()
    with pytest.raises(ValueError, match="too small"):
        run_speedrun(SpeedrunConfig(out_dir=tmp_path / "s2", quick=True, quick_vocab_size=-5), log=lambda m: None)
    assert speedrun.STAGES
