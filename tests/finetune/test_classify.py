"""Classification fine-tuning: the course's counts, every method learning a task, saved runs
that reload to the same predictions, PEFT loading our LoRA classifier, and the CLI."""

from __future__ import annotations

import ast
import json
import random

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from llmkit.cli.main import app
from llmkit.finetune.classifier import ClassifierSpec, SequenceClassifier, encode_texts, pool, predict_proba
from llmkit.finetune.classify import ClassifyConfig, finetune_classifier, load_classifier
from llmkit.finetune.data import LabelledTexts
from llmkit.models.gpt import with_qkv_layout
from llmkit.models.zoo import build_model, load_model, save_model
from llmkit.tokenizer import Tokenizer

TINY = dict(n_embd=64, n_layer=2, n_head=4, context_length=64)
runner = CliRunner()

FRUIT = ["apple", "pear", "plum", "cherry", "grape"]
TOOLS = ["hammer", "saw", "drill", "wrench", "chisel"]
FILLER = ["the", "a", "my", "old", "new", "red", "big", "small", "is", "here", "there", "and"]


def _task(n: int, seed: int) -> LabelledTexts:
    """Two classes a model must read to tell apart: a fruit or a tool word hidden among fillers."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 8))]
        words.insert(rng.randint(0, len(words)), rng.choice(FRUIT if label == 0 else TOOLS))
        texts.append(" ".join(words))
        labels.append(label)
    return LabelledTexts(texts, labels, ["fruit", "tool"], source="synthetic")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tok = Tokenizer.train([" ".join(FRUIT + TOOLS + FILLER)] * 20, 300)
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("base")
    save_model(build_model("gpt", "tiny", vocab_size=tok.n_vocab, **TINY), d)
    tok.save(d)
    return d


def _cfg(method: str, **kw) -> ClassifyConfig:
    return ClassifyConfig(method=method, **{"steps": 60, "batch_size": 16, "max_length": 32, "log_every": 20, **kw})


@pytest.mark.parametrize("method", ["full", "lora", "last-k", "head"])
def test_every_method_learns_and_the_run_reloads(method, base, tmp_path):
    data = _task(400, seed=1)
    lr, steps, floor = {"head": (3e-2, 60, None), "last-k": (3e-3, 100, 0.8), "full": (2e-3, 60, 0.9), "lora": (1e-2, 150, 0.9)}[method]
    result = finetune_classifier(data, tmp_path / "run", base=base, config=_cfg(method, lr=lr, steps=steps), log=lambda s: None)
    if floor is None:  # a head on a frozen, untrained backbone has little to read: it must still learn something
        assert result.history[-1]["loss"] < result.history[0]["loss"]
    else:
        assert result.report.accuracy >= floor, result.report.format_table()
    assert 0 < result.trainable_parameters <= result.total_parameters
    assert result.peak_memory_bytes is None or result.peak_memory_bytes >= 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["accuracy"] == result.report.accuracy and (tmp_path / "run" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert sum(map(sum, report["confusion"])) == result.examples["test"]

    clf, tok, spec = load_classifier(tmp_path / "run")
    texts = ["my old apple is here", "the saw and a drill", "plum"]
    again = predict_proba(clf, tok, texts, spec.max_length)
    if floor is not None:
        assert again.argmax(-1).tolist() == [0, 1, 0]
    trained = predict_proba(result.classifier, result.tokenizer, texts, spec.max_length)  # the model as trained, never saved
    torch.testing.assert_close(again, trained, rtol=1e-5, atol=1e-6)


def test_head_and_last_k_leave_the_frozen_weights_alone(base, tmp_path):
    ref = load_model(base).state_dict()
    for method, changed in (("head", set()), ("last-k", {"transformer.h.1.", "transformer.ln_f."})):
        finetune_classifier(_task(64, 2), tmp_path / method, base=base, config=_cfg(method, steps=5), log=lambda s: None)
        trained = load_file(tmp_path / method / "model.safetensors")
        for k, v in ref.items():
            if k.startswith("lm_head"):
                continue
            if any(k.startswith(p) for p in changed):
                assert not torch.equal(trained[f"model.{k}"], v), k
            else:
                assert torch.equal(trained[f"model.{k}"], v), k


def test_right_padding_does_not_change_a_text_s_scores(base):
    backbone = load_model(base)
    clf = SequenceClassifier(backbone, 3, "last").eval()
    tok = Tokenizer.load(base)
    texts = ["apple", "the big red hammer is here and there", "a plum"]
    together = predict_proba(clf, tok, texts, 32)
    alone = torch.cat([predict_proba(clf, tok, [t], 32) for t in texts])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    scores = torch.arange(24.0).view(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert pool(scores, mask, "last").tolist() == [scores[0, 1].tolist(), scores[1, 3].tolist()]
    assert pool(scores, mask, "mean")[0].tolist() == scores[0, :2].mean(0).tolist()
    assert pool(scores, mask, "cls").tolist() == scores[:, 0].tolist()


def test_peft_loads_our_lora_classifier_with_the_head_in_modules_to_save(base, tmp_path):
    from peft import PeftModel

    finetune_classifier(_task(64, 3), tmp_path / "run", base=base, config=_cfg("lora", steps=10, lr=1e-2), log=lambda s: None)
    adapter = json.loads((tmp_path / "run" / "adapter_config.json").read_text())
    assert adapter["modules_to_save"] == ["model.lm_head"] and adapter["task_type"] is None
    assert adapter["base_model_name_or_path"] == str(base.resolve())
    ours, tok, spec = load_classifier(tmp_path / "run")
    ids, mask = encode_texts(tok, ["a red apple", "the drill is here"], "gpt", 32)
    trained = finetune_classifier(_task(64, 3), None, base=base, config=_cfg("lora", steps=10, lr=1e-2), log=lambda s: None).classifier
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, mask), trained(ids, mask), rtol=1e-5, atol=1e-5)  # same seed, same training

    plain = SequenceClassifier(with_qkv_layout(load_model(base), split=True), 2, "last")
    theirs = PeftModel.from_pretrained(plain, tmp_path / "run").eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids, mask), ours(ids, mask), rtol=1e-5, atol=1e-5)


def test_an_encoder_classifier_with_cls_and_mean_pooling(tmp_path):
    tok = Tokenizer.train([" ".join(FRUIT + TOOLS + FILLER)] * 20, 300).add_special_tokens(["[CLS]", "[SEP]", "[MASK]", "[PAD]"])
    torch.manual_seed(0)
    save_model(build_model("bert", "tiny", vocab_size=tok.n_vocab, n_embd=64, n_layer=2, n_head=4, context_length=64), tmp_path / "bert")
    tok.save(tmp_path / "bert")
    for pooling in ("cls", "mean"):
        r = finetune_classifier(_task(300, 4), tmp_path / pooling, base=tmp_path / "bert", config=_cfg("full", pooling=pooling, lr=1e-3), log=lambda s: None)
        assert r.report.accuracy >= 0.85, (pooling, r.report.format_table())
        clf, _, spec = load_classifier(tmp_path / pooling)
        assert spec.pooling == pooling and clf.kind == "bert"
    with pytest.raises(ValueError, match="pooling 'last' does not suit"):
        finetune_classifier(_task(30, 4), None, base=tmp_path / "bert", config=_cfg("head", pooling="last"), log=lambda s: None)


def test_bad_settings_are_refused(base, tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        ClassifyConfig(method="everything")
    with pytest.raises(ValueError, match="last_k=5"):
        finetune_classifier(_task(30, 5), None, base=base, config=_cfg("last-k", last_k=5), log=lambda s: None)
    with pytest.raises(ValueError, match="adapts a saved pre-trained model"):
        finetune_classifier(_task(30, 5), tmp_path / "x", preset="tiny", config=_cfg("lora"), log=lambda s: None)
    with pytest.raises(ValueError, match="at least 2 classes"):
        ClassifierSpec("gpt", {}, ["only"])
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        finetune_classifier(_task(30, 5), tmp_path / "taken", base=base, config=_cfg("head"), log=lambda s: None)
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_the_course_counts_from_the_cli():
    r = runner.invoke(app, ["finetune", "classify", "--preset", "gpt2-124m", "--num-classes", "2", "--dry-run"])
    assert r.exit_code == 0, r.output
    rows = {line.rsplit(None, 1)[0].strip(): int(line.rsplit(None, 1)[1].replace(",", "")) for line in r.output.splitlines()[1:] if line.strip()}
    assert rows["full fine-tuning (--method full)"] == 124_441_346
    assert rows["frozen (nothing trainable)"] == 0
    assert rows["LoRA r=16 on every Linear layer, head included (the course)"] == 2_666_528


def test_cli_trains_from_a_csv_and_classify_prints_the_pipeline_shape(base, tmp_path):
    data = _task(120, 6)
    csv = tmp_path / "d.csv"
    csv.write_text("sentence,kind\n" + "".join(f"{t},{data.classes[y]}\n" for t, y in zip(data.texts, data.labels)))
    args = ["finetune", "classify", "--data", str(csv), "--text-column", "sentence", "--label-column", "kind", "--base", str(base),
            "-o", str(tmp_path / "run"), "--method", "full", "--steps", "40", "--lr", "2e-3", "--max-length", "32"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "macro-F1" in r.output and "trainable parameters" in r.output
    r = runner.invoke(app, ["classify", str(tmp_path / "run"), "a pear", "a wrench"])
    assert r.exit_code == 0, r.output
    out = ast.literal_eval(r.output.strip())
    assert [o["label"] for o in out] == ["fruit", "tool"] and all(0.5 < o["score"] <= 1 for o in out)
    # bad input: one line, exit 1, no traceback; the existing run is kept
    for bad, msg in (
        (args, "already exists"),
        (["finetune", "classify", "--data", str(tmp_path / "none.csv"), "--base", str(base), "-o", str(tmp_path / "r2")], "none.csv"),
        (["finetune", "classify", "--data", str(csv), "--base", str(base), "-o", str(tmp_path / "r3")], "no column 'text'"),
        (["finetune", "classify", "--base", str(base), "--preset", "tiny", "-o", str(tmp_path / "r4")], "either --base"),
        (["classify", str(tmp_path / "nowhere"), "x"], "not a classifier run"),
        (["classify", str(tmp_path / "run")], "TEXT arguments or --file"),
        (["finetune", "classify", "--preset", "tiny", "--model", "nplm", "--method", "full", "-o", str(tmp_path / "r5")], "gpt or bert"),
        (["finetune", "classify", "--preset", "tiny", "--num-classes", "2", "--dry-run", "--last-k", "0"], "last_k must be >= 1"),
        (["finetune", "classify", "--preset", "tiny", "--num-classes", "2", "--dry-run", "--lora-targets", "nope"], "match no linear layer"),
        (["finetune", "classify", "--base", str(base), "--data", str(csv), "-o", str(csv), "--force"], "overlaps"),
    ):
        r = runner.invoke(app, bad)
        assert r.exit_code == 1 and msg in r.output and "Traceback" not in r.output, (bad, r.output)
    assert (tmp_path / "run" / "classifier.json").is_file()


def test_a_peft_trained_classifier_adapter_with_a_short_head_name_loads(base, tmp_path):
    from peft import LoraConfig, get_peft_model

    from llmkit.models.lora_files import load_adapter

    torch.manual_seed(9)
    mine = SequenceClassifier(with_qkv_layout(load_model(base), split=True), 2, "last")
    twin = SequenceClassifier(with_qkv_layout(load_model(base), split=True), 2, "last")
    twin.load_state_dict(mine.state_dict())
    pm = get_peft_model(mine, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"]))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n or "modules_to_save" in n:
                p.add_(torch.randn_like(p) * 0.1)
    pm.save_pretrained(tmp_path / "a")
    load_adapter(twin, tmp_path / "a")
    ids = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(twin(ids), pm(ids), rtol=1e-5, atol=1e-5)


def test_split_too_small_and_bad_targets_fail_before_training(base):
    with pytest.raises(ValueError, match="too few texts"):
        finetune_classifier(_task(4, 7), None, base=base, config=_cfg("head"), log=lambda s: None)
    with pytest.raises(ValueError, match="match no linear layer.*c_fc"):
        finetune_classifier(_task(60, 7), None, base=base, config=_cfg("lora", lora_targets=["nope"]), log=lambda s: None)
    # GPT-2's fused name is understood: LoRA on its three parts
    r = finetune_classifier(_task(60, 7), None, base=base, config=_cfg("lora", steps=1, lora_targets=["c_attn"]), log=lambda s: None)
    assert r.trainable_parameters == 2 * 3 * 8 * (64 + 64) + 64 * 2 + 2


def test_a_changed_base_is_refused_by_its_lora_run(base, tmp_path):
    import shutil

    mine = tmp_path / "base"
    shutil.copytree(base, mine)
    finetune_classifier(_task(60, 8), tmp_path / "run", base=mine, config=_cfg("lora", steps=2), log=lambda s: None)
    load_classifier(tmp_path / "run")
    torch.manual_seed(123)
    save_model(build_model("gpt", "tiny", vocab_size=Tokenizer.load(mine).n_vocab, **TINY), mine, overwrite=True)
    with pytest.raises(ValueError, match="has changed"):
        load_classifier(tmp_path / "run")


def test_force_never_replaces_the_base_or_the_data(base, tmp_path):
    csv = tmp_path / "d.csv"
    data = _task(60, 9)
    csv.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in zip(data.texts, data.labels)))
    for out in (base, base.parent, csv):
        with pytest.raises((ValueError, FileExistsError)):
            finetune_classifier(str(csv), out, base=base, config=_cfg("head", steps=1), overwrite=True, log=lambda s: None)
    assert (base / "model.safetensors").is_file() and csv.read_text().startswith("text,label")
