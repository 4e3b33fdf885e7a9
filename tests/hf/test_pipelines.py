"""``llmkit pipeline``: the seven task families through transformers pipelines (or our own for
QA and text2text, which transformers 5 dropped), on local models only.

Outside truths: our own GPT's greedy continuation and our own BERT's MLM logits and hidden
states (for the models llmkit exports); for heads built from a config with random weights
(classification, NER, QA, T5) the model's own logits computed by hand here. Those are
plumbing checks (labels, scores, spans, offsets, JSON), not checks of trained quality."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from llmkit.cli.pipeline import pipeline as pipeline_cmd
from llmkit.hf.convert import export_model
from llmkit.hf.pipelines import TASKS, make_pipeline, pick_device, read_inputs, resolve_task, run_pipeline
from llmkit.models.zoo import build_model, save_model
from llmkit.tokenizer import Tokenizer
from hf_testutils import perturb

TEXTS = [
    "The quick brown fox jumps over the lazy dog. 12345 + 678 = 13023",
    "def f(x):\n    return {'a': x ** 2}  # square\n",
    "Hello, world! Paris is the capital of France, and Berlin of Germany.",
    "Ünïcödé — naïve café, 日本語, the river runs to the sea.",
]


def _cli(*args: str, input: str | None = None):
    app = typer.Typer()
    app.command()(pipeline_cmd)
    return CliRunner().invoke(app, list(args), input=input)


def _rows(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def gpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpt")
    tok = Tokenizer.train(TEXTS * 10, 400, pattern="gpt4")
    torch.manual_seed(0)
    model = perturb(build_model("gpt", "tiny", vocab_size=tok.n_vocab, context_length=64, n_embd=64))
    save_model(model, d / "run" / "model")
    tok.save(d / "run" / "model")
    return export_model(d / "run", d / "hf"), model, tok


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    d = tmp_path_factory.mktemp("bert")
    tok = Tokenizer.train(TEXTS * 10, 400).add_special_tokens(["[CLS]", "[SEP]", "[MASK]", "[PAD]"])
    torch.manual_seed(0)
    model = perturb(build_model("bert", "tiny", vocab_size=tok.n_vocab, context_length=64))
    save_model(model, d / "run" / "model")
    tok.save(d / "run" / "model")
    return export_model(d / "run", d / "hf"), model, tok


def _head(tmp_path, bert, cls_name: str, **config):
    """A small random BertFor<head> saved by transformers, with our exported BERT tokenizer."""
    import transformers

    out, _, tok = bert
    torch.manual_seed(1)
    cfg = transformers.BertConfig(vocab_size=tok.n_vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64, **config)
    model = perturb(getattr(transformers, cls_name)(cfg), scale=0.5)
    model.save_pretrained(tmp_path / "m")
    transformers.AutoTokenizer.from_pretrained(out).save_pretrained(tmp_path / "m")
    return tmp_path / "m", model, transformers.AutoTokenizer.from_pretrained(tmp_path / "m")


def test_task_names_aliases_and_devices():
    assert set(TASKS.values()) == {
        "text-classification", "token-classification", "question-answering", "text-generation",
        "text2text-generation", "fill-mask", "feature-extraction",
    }
    assert [resolve_task(t) for t in ("sentiment", "ner", "qa", "summarization", "translation")] == [
        "text-classification", "token-classification", "question-answering", "text2text-generation", "text2text-generation",
    ]
    assert pick_device("cpu") == "cpu"
    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("tpu")


def test_text_generation_equals_our_greedy_continuation(gpt):
    from llmkit.generation import generate_text

    out, model, tok = gpt
    prompts = ["The quick brown", "def f(x):"]
    rows = list(run_pipeline("text-generation", out, prompts, max_new_tokens=12, dtype="float32"))
    for prompt, row in zip(prompts, rows):
        assert row["input"] == prompt
        assert row["generated_text"] and row["generated_text"] == generate_text(model, tok, prompt, 12, temperature=0)


def test_fill_mask_scores_are_softmax_of_our_bert_logits(bert):
    out, model, tok = bert
    text = "The quick brown [MASK] jumps over the lazy dog."
    ids = [tok.special_tokens["[CLS]"], *tok.encode(text, allowed_special="all"), tok.special_tokens["[SEP]"]]
    pos = ids.index(tok.special_tokens["[MASK]"])
    with torch.no_grad():
        probs = model(torch.tensor([ids]))[0][0, pos].softmax(-1)
    top = probs.topk(4)
    (row,) = run_pipeline("fill-mask", out, [text], top_k=4)
    preds = row["predictions"]
    assert [p["token"] for p in preds] == top.indices.tolist()
    assert [p["score"] for p in preds] == pytest.approx(top.values.tolist(), abs=1e-5)
    assert all(p["sequence"] and isinstance(p["token_str"], str) for p in preds)


def test_feature_extraction_pools_our_bert_hidden_states(bert):
    from llmkit.models.bert import encode_for_bert

    out, model, tok = bert
    rows = list(run_pipeline("feature-extraction", out, TEXTS[:2], token_matrix=True))
    enc = encode_for_bert(tok, TEXTS[:2])
    with torch.no_grad():
        hidden = model.encode(enc["input_ids"], attention_mask=enc["attention_mask"])
    for k, row in enumerate(rows):
        real = enc["attention_mask"][k].bool()
        assert row["tokens"] == int(real.sum()) and row["dim"] == hidden.shape[-1] == len(row["embedding"])
        assert row["embedding"] == pytest.approx(hidden[k][real].mean(0).tolist(), abs=1e-4)
        assert torch.allclose(torch.tensor(row["token_embeddings"]), hidden[k][real], atol=1e-4)


def test_text_classification_labels_and_scores_are_softmax_of_the_logits(tmp_path, bert):
    labels = {0: "negative", 1: "neutral", 2: "positive"}
    d, model, hf_tok = _head(tmp_path, bert, "BertForSequenceClassification", id2label=labels, label2id={v: k for k, v in labels.items()})
    rows = list(run_pipeline("sentiment", d, TEXTS[:2], top_k=3))
    for text, row in zip(TEXTS[:2], rows):
        with torch.no_grad():
            probs = model(**hf_tok(text, return_tensors="pt")).logits[0].softmax(-1)
        got = {p["label"]: p["score"] for p in row["labels"]}
        assert got == pytest.approx({labels[i]: probs[i].item() for i in range(3)}, abs=1e-5)
        assert [p["score"] for p in row["labels"]] == sorted(got.values(), reverse=True)
    (row,) = run_pipeline("text-classification", d, TEXTS[1:2])  # default: the top label only
    assert row["labels"] == [{"label": labels[int(probs.argmax())], "score": pytest.approx(probs.max().item(), abs=1e-5)}]


def test_token_classification_tags_are_the_argmax_of_the_logits(tmp_path, bert):
    labels = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
    d, model, hf_tok = _head(tmp_path, bert, "BertForTokenClassification", id2label=labels, label2id={v: k for k, v in labels.items()})
    text = TEXTS[2]
    (row,) = run_pipeline("ner", d, [text], aggregation="none")
    enc = hf_tok(text, return_tensors="pt", return_offsets_mapping=True)
    offsets = enc.pop("offset_mapping")[0].tolist()
    with torch.no_grad():
        probs = model(**enc).logits[0].softmax(-1)
    expected = [
        (labels[int(p.argmax())], a, b, pytest.approx(p.max().item(), abs=1e-5))
        for p, (a, b) in zip(probs, offsets)
        if b > a and int(p.argmax()) != 0  # special tokens have empty offsets; "O" is left out
    ]
    assert expected and [(e["entity"], e["start"], e["end"], e["score"]) for e in row["entities"]] == expected
    assert all(text[e["start"]:e["end"]] for e in row["entities"])
    (grouped,) = run_pipeline("ner", d, [text])  # simple aggregation: word-level groups
    assert all({"entity_group", "score", "word", "start", "end"} <= set(e) for e in grouped["entities"])


def test_question_answering_picks_the_best_context_span(tmp_path, bert):
    d, model, hf_tok = _head(tmp_path, bert, "BertForQuestionAnswering")
    item = {"question": "What is the capital of France?", "context": TEXTS[2]}
    (row,) = run_pipeline("qa", d, [item])
    enc = hf_tok(item["question"], item["context"], return_tensors="pt", return_offsets_mapping=True)
    offsets = enc.pop("offset_mapping")[0].tolist()
    ctx = [k for k, s in enumerate(enc.sequence_ids(0)) if s == 1]
    with torch.no_grad():
        out = model(**enc)
    ps, pe = out.start_logits[0, ctx].softmax(-1), out.end_logits[0, ctx].softmax(-1)
    score, i, j = max((ps[a].item() * pe[b].item(), a, b) for a in range(len(ctx)) for b in range(a, min(a + 15, len(ctx))))
    start, end = offsets[ctx[i]][0], offsets[ctx[j]][1]
    assert row == {"input": item, "answer": item["context"][start:end], "score": pytest.approx(score, rel=1e-4), "start": start, "end": end}


def test_text2text_is_greedy_seq2seq_generation(tmp_path, gpt):
    import transformers

    out, _, tok = gpt
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    hf_tok.pad_token = hf_tok.eos_token  # T5 starts decoding from the pad id
    eos = hf_tok.eos_token_id
    cfg = transformers.T5Config(vocab_size=tok.n_vocab, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, pad_token_id=eos, eos_token_id=eos, decoder_start_token_id=eos)
    torch.manual_seed(2)
    model = perturb(transformers.T5ForConditionalGeneration(cfg), scale=0.5)
    model.save_pretrained(tmp_path / "t5")
    hf_tok.save_pretrained(tmp_path / "t5")
    (row,) = run_pipeline("summarization", tmp_path / "t5", [TEXTS[0]], max_new_tokens=8)
    enc = hf_tok(TEXTS[0], return_tensors="pt")
    dec = torch.tensor([[eos]])
    with torch.no_grad():  # greedy by hand: argmax of the decoder's last logits, until eos
        for _ in range(8):
            nxt = model(**enc, decoder_input_ids=dec).logits[0, -1].argmax()
            dec = torch.cat([dec, nxt.view(1, 1)], 1)
            if nxt.item() == eos:
                break
    assert row["generated_text"] == hf_tok.decode(dec[0], skip_special_tokens=True)


def test_inputs_from_arguments_file_jsonl_and_stdin(tmp_path, bert):
    out = str(bert[0])
    f = tmp_path / "in.jsonl"
    f.write_text('{"text": "a [MASK] b"}\n\n{"text": "日本語 [MASK]"}\n', encoding="utf-8")
    assert read_inputs(["x", '{"text": "y"}']) == ["x", {"text": "y"}]
    assert read_inputs(None, f) == [{"text": "a [MASK] b"}, {"text": "日本語 [MASK]"}]
    by_args = _rows(_cli("fill-mask", "a [MASK] b", "日本語 [MASK]", "--model", out, "--top-k", "2"))
    by_file = _rows(_cli("fill-mask", "--model", out, "--file", str(f), "--top-k", "2"))
    by_stdin = _rows(_cli("fill-mask", "--model", out, "--file", "-", "--top-k", "2", input="a [MASK] b\n日本語 [MASK]\n"))
    piped = _rows(_cli("fill-mask", "--model", out, "--top-k", "2", input="a [MASK] b\n日本語 [MASK]\n"))
    assert [r["input"] for r in by_args] == ["a [MASK] b", "日本語 [MASK]"]
    assert by_args == by_file == by_stdin == piped and all(len(r["predictions"]) == 2 for r in by_args)
    assert "日本語" in _cli("fill-mask", "日本語 [MASK]", "--model", out).stdout  # ensure_ascii=False


def test_qa_and_feature_extraction_through_the_cli(tmp_path, bert):
    d, _, _ = _head(tmp_path, bert, "BertForQuestionAnswering")
    item = {"question": "Where is Berlin?", "context": TEXTS[2]}
    (row,) = _rows(_cli("qa", json.dumps(item), "--model", str(d)))
    assert row["input"] == item and row["answer"] == item["context"][row["start"]:row["end"]]
    (feat,) = _rows(_cli("feature-extraction", "hello world", "--model", str(bert[0]), "--dtype", "float32", "--device", "cpu"))
    assert feat["dim"] == len(feat["embedding"]) and "token_embeddings" not in feat


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["translate-everything", "x", "--model", "m"], "unknown task 'translate-everything'"),
        (["fill-mask", "x", "--model", "/no/such/model-dir"], "does not exist"),
        (["qa", "just a question", "--model", "BERT"], "question answering needs a JSON object"),
        (["qa", '{"question": "q"}', "--model", "BERT"], "question answering needs a JSON object"),
        (["fill-mask", "--model", "BERT"], "no input"),
        (["fill-mask", "x", "--model", "BERT", "--device", "tpu"], "unknown device"),
        (["fill-mask", "x", "--model", "BERT", "--dtype", "int3"], "unknown dtype"),
        (["fill-mask", "{bad json", "--model", "BERT"], "not a JSON object"),
        (["fill-mask", "x", "--model", "someone/not-cached-model"], "cannot load model 'someone/not-cached-model'"),
    ],
)
def test_one_line_errors(bert, args, message):
    args = [str(bert[0]) if a == "BERT" else a for a in args]
    result = _cli(*args, input="" if "no input" == message else None)
    assert result.exit_code == 1, result.output
    err = result.stderr.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_make_pipeline_rejects_a_directory_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        make_pipeline("fill-mask", tmp_path)


def test_a_model_that_cannot_serve_the_task_is_a_one_line_error(gpt):
    result = _cli("fill-mask", "x", "--model", str(gpt[0]))  # a GPT's tokenizer has no mask token
    assert result.exit_code == 1 and "cannot use" in result.stderr and "mask_token" in result.stderr, result.output
    assert "Traceback" not in result.output


def test_feature_extraction_of_minilm_is_sentence_transformers_embedding():
    """all-MiniLM-L6-v2 (pip-shipped) by name: our mean-pooled vector, normalised, is what
    sentence-transformers (mean pooling, then its Normalize module) computes."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from llmkit.hf.pipelines import resolve_model

    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply on Monday."]
    ours = np.array([row["embedding"] for row in run_pipeline("feature-extraction", "minilm", texts, device="cpu")])
    ours /= np.linalg.norm(ours, axis=1, keepdims=True)
    theirs = SentenceTransformer(resolve_model("minilm"), device="cpu").encode(texts)
    assert np.allclose(ours, theirs, atol=1e-5)
    sims = ours @ ours.T
    assert sims[0, 1] > sims[0, 2] + 0.3  # food is nearer to bread than to stocks
