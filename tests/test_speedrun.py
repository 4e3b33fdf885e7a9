"""The main job: every stage runs, writes its report and figures, and resumes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from llmkit import speedrun
from llmkit.cli.main import app
from llmkit.speedrun import SpeedrunConfig, run_speedrun


def test_quick_speedrun_from_the_cli_writes_report_and_figures(tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["speedrun", "--quick", "--out", str(out)])
    assert r.exit_code == 0, r.output
    report = (out / "report.md").read_text(encoding="utf-8")
    for stage in speedrun.STAGES:
        assert f"## {stage.title}" in report
        assert (out / "stages" / f"{stage.name}.json").is_file()
    for fig in ("bytes_per_token.png", "token_length_by_rank.png", "pretrain/loss.png", "attention.png", "compare/compare.png",
                "classify/full/confusion.png", "classify/lora/confusion.png", "classify/minilm-lora/confusion.png"):
        assert (out / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pre = json.loads((out / "stages" / "pretrain.json").read_text())["results"]
    assert pre["final"]["loss"] < pre["first_loss"]  # it learned something
    assert [r["model"] for r in json.loads((out / "stages" / "compare.json").read_text())["results"]["rows"]] == ["ngram", "nplm", "lstm", "gpt"]
    samples = json.loads((out / "stages" / "samples.json").read_text())["results"]["samples"]
    assert len(samples) == 3 and all(s["greedy"] for s in samples)
    rows = json.loads((out / "stages" / "tokenizer_stats.json").read_text())["results"]["rows"]
    assert [row["tokenizer"] for row in rows] == ["ours (1024)", "gpt2", "cl100k_base", "o200k_base"]
    cls = json.loads((out / "stages" / "classify.json").read_text())["results"]
    full, lora = cls["rows"]["full"], cls["rows"]["lora"]
    assert cls["classes"] == ["negative", "neutral", "positive"]
    assert lora["trainable_parameters"] < full["trainable_parameters"] / 10
    assert (out / "classify" / "lora" / "adapter_model.safetensors").is_file() and (out / "classify" / "full" / "model.safetensors").is_file()
    minilm = cls["rows"]["minilm-lora"]  # all-MiniLM-L6-v2 + PEFT LoRA through the Trainer, on the same split
    assert minilm["trainable_line"] == "trainable params: 339,075 || all params: 23,053,446 || trainable%: 1.4708"
    assert minilm["examples"] == full["examples"] and minilm["merge_max_abs_diff"] < 1e-5
    assert (out / "classify" / "minilm-lora" / "adapter" / "adapter_model.safetensors").is_file()
    hf = json.loads((out / "stages" / "hf.json").read_text())["results"]
    assert all(s["same"] for s in hf["samples"])  # transformers' pipeline writes what llmkit writes
    assert [m["model"] for m in hf["memory"]][1] == "gpt2-124m" and hf["memory"][1]["params"] == 124_439_808
    rag = json.loads((out / "stages" / "rag.json").read_text())["results"]
    assert len(rag["answers"]) == 3 and all(a["quotes"] and a["sources"] for a in rag["answers"])
    assert set(rag["eval"]) == {"dense", "bm25", "hybrid"} and rag["questions"] >= 10
    ag = json.loads((out / "stages" / "agents.json").read_text())["results"]
    assert ag["calculator"]["problems"] == 20 and ag["rag"]["questions"] >= 1
    assert 0 <= ag["calculator"]["with_tools"]["accuracy"] <= 1 and ag["sft"]["val_loss"] < ag["sft"]["initial_val_loss"]
    for name in ("transcript_calculator.jsonl", "transcript_rag.jsonl"):
        first = json.loads((out / "agent" / name).read_text().split("\n")[0])
        assert first["role"] == "user"
    assert (out / "agent" / "model" / "llmkit_tokenizer.json").read_text().count("gpt4-digits") == 1
    assert "serve the model it trained: llmkit serve" in r.output and "curl http://127.0.0.1:8000/v1/completions" in r.output
    assert "[skip]" in CliRunner().invoke(app, ["speedrun", "--quick", "--out", str(out)]).output


@pytest.fixture
def small_config(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(" ".join(f"word{i % 97} value{i % 13}." for i in range(4000)), encoding="utf-8")
    return SpeedrunConfig(out_dir=tmp_path / "run", quick=True, corpus=str(corpus), quick_vocab_size=300, quick_pretrain_steps=4, quick_compare_budget=600,
                          quick_classify_per_class=12, quick_classify_steps=3, quick_agent_steps=3)


def test_finished_stages_are_not_redone(small_config, monkeypatch):
    logs: list[str] = []
    run_speedrun(small_config, log=logs.append)
    assert sum(m.startswith("[run ]") for m in logs) == len(speedrun.STAGES)

    def boom(ctx):
        raise AssertionError("a finished stage ran again")

    stages = [speedrun.Stage(st.name, st.title, boom, st.report, st.settings) for st in speedrun.STAGES]
    monkeypatch.setattr(speedrun, "STAGES", stages)
    logs.clear()
    report = run_speedrun(small_config, log=logs.append)
    assert all(m.startswith("[skip]") for m in logs) and report.is_file()


def test_changed_settings_rerun_the_stage(small_config):
    run_speedrun(small_config, log=lambda m: None)
    logs: list[str] = []
    changed = SpeedrunConfig(out_dir=small_config.out_dir, quick=True, corpus=small_config.corpus, quick_vocab_size=320, quick_pretrain_steps=4, quick_compare_budget=600,
                          quick_classify_per_class=12, quick_classify_steps=3, quick_agent_steps=3)
    run_speedrun(changed, log=logs.append)
    assert "[skip] 1. Corpus (done in an earlier run)" in logs
    assert any(m.startswith("[run ] 2.") for m in logs)
    tok = json.loads((small_config.out_dir / "stages" / "tokenizer.json").read_text())
    assert tok["results"]["n_vocab"] == 320


def test_interrupted_stage_leaves_no_done_marker(small_config, monkeypatch):
    def crash(ctx):
        raise KeyboardInterrupt

    stages = list(speedrun.STAGES)
    idx = [s.name for s in stages].index("tokenizer_stats")
    st = stages[idx]
    stages[idx] = speedrun.Stage(st.name, st.title, crash, st.report, st.settings)
    monkeypatch.setattr(speedrun, "STAGES", stages)
    with pytest.raises(KeyboardInterrupt):
        run_speedrun(small_config, log=lambda m: None)
    assert (small_config.out_dir / "stages" / "tokenizer.json").is_file()
    assert not (small_config.out_dir / "stages" / "tokenizer_stats.json").exists()


def test_unknown_stage_is_an_error(small_config):
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        run_speedrun(small_config, only=["nope"])
    r = CliRunner().invoke(app, ["speedrun", "--quick", "--stage", "nope", "--out", str(small_config.out_dir)])
    assert r.exit_code == 1 and "unknown stage" in r.stderr
