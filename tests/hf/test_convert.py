"""llmkit <-> transformers: exported GPT/BERT directories load in transformers with the same
logits and token ids (and chat rendering); GPT-2 checkpoints written by transformers import
with the same logits and greedy continuations. The outside truth is transformers itself."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import typer
from typer.testing import CliRunner

from llmkit.chat import ChatTemplate, ensure_chat_tokens
from llmkit.hf.convert import export_model, import_gpt2, read_hf_bpe_tokenizer
from llmkit.inference import load_pretrained
from llmkit.models.zoo import build_model, save_model
from llmkit.tokenizer import Tokenizer
from hf_testutils import perturb

TEXTS = [
    "def f(x):\n    return {'a': x ** 2}  # square\n",
    "Hello, world! Ünïcödé — naïve café, 日本語, emoji 😀🚀.",
    "  leading spaces\n\n\ttabs and   runs   of spaces  \n",
    "The quick brown fox jumps over the lazy dog. 12345 + 678 = 13023",
]
SPECIAL_TEXT = "<|user|>hi<|end|>\n<|endoftext|>after"


@pytest.fixture(scope="module")
def chat_tokenizer() -> Tokenizer:
    return ensure_chat_tokens(Tokenizer.train(TEXTS * 10, 420, pattern="gpt4"))


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory, chat_tokenizer):
    """A run directory shaped as ``llmkit finetune sft`` writes it: RUN/model with weights,
    tokenizer files and chat_template.json."""
    run = tmp_path_factory.mktemp("chat-run")
    torch.manual_seed(0)
    model = perturb(build_model("gpt", "tiny", vocab_size=chat_tokenizer.n_vocab, context_length=64, n_embd=64))
    save_model(model, run / "model", extra={"chat_template": "llmkit-chat-v1"})
    chat_tokenizer.save(run / "model")
    (run / "model" / "chat_template.json").write_text(json.dumps(ChatTemplate(chat_tokenizer).describe()))
    return run, model


@pytest.fixture(scope="module")
def exported_chat(tmp_path_factory, chat_run):
    out = tmp_path_factory.mktemp("export") / "hf"
    return export_model(chat_run[0], out)


def test_gpt_export_loads_in_transformers_with_the_same_logits_and_ids(exported_chat, chat_run, chat_tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel

    _, ours = chat_run
    hf = AutoModelForCausalLM.from_pretrained(exported_chat).eval()
    assert isinstance(hf, GPT2LMHeadModel)
    x = torch.randint(0, chat_tokenizer.n_vocab, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (hf(x).logits - ours(x)[0]).abs().max().item() <= 1e-4
    hf_tok = AutoTokenizer.from_pretrained(exported_chat)
    for text in TEXTS:
        assert hf_tok(text)["input_ids"] == chat_tokenizer.encode(text)
        assert hf_tok.decode(hf_tok(text)["input_ids"]) == text
    assert hf_tok(SPECIAL_TEXT)["input_ids"] == chat_tokenizer.encode(SPECIAL_TEXT, allowed_special="all")
    eot, end = chat_tokenizer.eot_token, chat_tokenizer.special_tokens["<|end|>"]
    assert hf_tok.eos_token_id == eot and hf.config.eos_token_id == eot
    assert set(chat_tokenizer.special_tokens) <= set(hf_tok.all_special_tokens)  # kept, and skipped on request
    assert hf_tok.decode(chat_tokenizer.encode(SPECIAL_TEXT, allowed_special="all"), skip_special_tokens=True) == "hi\nafter"
    assert set(hf.generation_config.eos_token_id) == {eot, end}  # a chat reply stops at <|end|>
    config = json.loads((exported_chat / "config.json").read_text())
    assert config["model_type"] == "gpt2" and "llmkit" not in config  # a plain transformers directory
    assert not (exported_chat / "chat_template.json").exists()  # llmkit's own file would confuse AutoProcessor


CONVERSATIONS = [
    [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"}],
    [
        {"role": "system", "content": "Answer briefly; use tools for arithmetic."},
        {"role": "user", "content": "Wie viel ist 12 * 7 + 3? — 日本語"},
        {"role": "assistant", "content": None, "tool_calls": [{"name": "calculator", "arguments": {"expression": "12 * 7 + 3", "ünï": [1, 2.5, None]}}]},
        {"role": "tool", "name": "calculator", "content": "87"},
        {"role": "assistant", "content": "It is 87."},
    ],
    [  # OpenAI's nested tool-call form and content parts
        {"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "2 + 3?"}]},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "2 + 3"}}},
            {"type": "function", "function": {"name": "python", "arguments": {"code": "print('a\\nb')"}}},
        ]},
        {"role": "tool", "content": "5"},
        {"role": "tool", "content": "a\nb"},
    ],
]


@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=["plain", "system+tool", "openai-form"])
def test_the_exported_chat_template_renders_exactly_like_ours(exported_chat, chat_tokenizer, conversation):
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(exported_chat)
    template = ChatTemplate(chat_tokenizer)
    assert hf_tok.apply_chat_template(conversation, tokenize=False) == template.render(conversation)
    assert hf_tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True) == template.prompt_text(conversation)
    ids = hf_tok.apply_chat_template(conversation, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert list(ids) == template.prompt_ids(conversation)


def test_bert_export_loads_as_bert_for_masked_lm_with_the_same_logits_and_inputs(tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer, BertForMaskedLM

    from llmkit.models.bert import encode_for_bert

    tok = Tokenizer.train(TEXTS * 10, 400).add_special_tokens(["[CLS]", "[SEP]", "[MASK]", "[PAD]"])
    torch.manual_seed(0)
    ours = perturb(build_model("bert", "tiny", vocab_size=tok.n_vocab, context_length=64))
    save_model(ours, tmp_path / "run" / "model")
    tok.save(tmp_path / "run" / "model")
    out = export_model(tmp_path / "run", tmp_path / "hf")
    hf = AutoModelForMaskedLM.from_pretrained(out).eval()
    hf_tok = AutoTokenizer.from_pretrained(out)
    assert isinstance(hf, BertForMaskedLM)
    enc = encode_for_bert(tok, TEXTS[:3], ["a second segment", "b", TEXTS[3]])
    hf_enc = hf_tok(TEXTS[:3], ["a second segment", "b", TEXTS[3]], padding=True, return_tensors="pt")
    for key in ("input_ids", "attention_mask", "token_type_ids"):  # [CLS] a [SEP] b [SEP], right padding
        assert torch.equal(hf_enc[key], enc[key]), key
    with torch.no_grad():
        theirs = hf(**hf_enc).logits
        mine = ours(enc["input_ids"], attention_mask=enc["attention_mask"], token_type_ids=enc["token_type_ids"])[0]
    real = enc["attention_mask"].bool()
    assert (theirs - mine)[real].abs().max().item() <= 1e-4
    assert (hf_tok.mask_token_id, hf_tok.pad_token_id) == (tok.special_tokens["[MASK]"], tok.special_tokens["[PAD]"])


def _hf_gpt2(d, *, vocab_size: int, tie: bool = True, seed: int = 0, **config):
    """A random GPT-2 saved by transformers itself (config.json + model.safetensors)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=4, tie_word_embeddings=tie, **config)
    model = perturb(GPT2LMHeadModel(cfg), seed=seed)
    model.save_pretrained(d)
    return model


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_a_transformers_gpt2_imports_with_the_same_logits_and_greedy_text(tmp_path, chat_tokenizer, tie):
    from llmkit.generation import generate

    vocab = chat_tokenizer.n_vocab + 3  # a padded vocabulary, as many checkpoints have
    theirs = _hf_gpt2(tmp_path / "ckpt", vocab_size=vocab, tie=tie)
    chat_tokenizer.save(tmp_path / "tok")
    out = import_gpt2(tmp_path / "ckpt", tmp_path / "ours", tokenizer=tmp_path / "tok")
    model, tok, kind = load_pretrained(out)
    assert kind == "gpt" and tok.n_vocab == chat_tokenizer.n_vocab
    assert (model.lm_head.weight is model.transformer.wte.weight) == tie
    x = torch.randint(0, vocab, (2, 50), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (model(x)[0] - theirs(x).logits).abs().max().item() <= 1e-4
        hf_greedy = theirs.generate(x[:1], max_new_tokens=12, do_sample=False, pad_token_id=0)[0, 50:].tolist()
    assert generate(model, x[0], 12, temperature=0) == hf_greedy


def test_import_reads_the_checkpoint_tokenizer_or_falls_back_to_gpt2(tmp_path):
    from transformers import GPT2TokenizerFast

    from llmkit.tokenizer.files import gpt2_files

    _hf_gpt2(tmp_path / "bare", vocab_size=50257)  # no tokenizer files at all
    _, tok, _ = load_pretrained(import_gpt2(tmp_path / "bare", tmp_path / "a"))
    assert tok.name == "gpt2"
    encoder_json, vocab_bpe = gpt2_files()  # GPT-2's own files, shipped by a pip package
    (tmp_path / "old").mkdir()  # the layout of transformers 4 and the original checkpoints
    shutil.copy(encoder_json, tmp_path / "old" / "vocab.json")
    shutil.copy(vocab_bpe, tmp_path / "old" / "merges.txt")
    hf_tok = GPT2TokenizerFast.from_pretrained(tmp_path / "old")
    shutil.copytree(tmp_path / "bare", tmp_path / "with-tok")
    hf_tok.save_pretrained(tmp_path / "with-tok")  # tokenizer.json only (transformers 5)
    for d in ("old", "with-tok"):
        ours = read_hf_bpe_tokenizer(tmp_path / d)
        for text in [*TEXTS, "<|endoftext|> end"]:
            assert ours.encode(text, allowed_special="all") == hf_tok(text)["input_ids"], (d, text)
    _, tok, _ = load_pretrained(import_gpt2(tmp_path / "with-tok", tmp_path / "b"))
    assert tok.name == "with-tok" and tok.eot_token == 50256


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"scale_attn_by_inverse_layer_idx": True}, "scaled by 1/layer"),
        ({"reorder_and_upcast_attn": True}, "upcast"),
        ({"activation_function": "relu"}, "activation 'relu'"),
        ({"n_inner": 100}, "MLP is 100 wide"),
    ],
)
def test_import_refuses_gpt2_features_we_lack(tmp_path, config, message):
    _hf_gpt2(tmp_path / "ckpt", vocab_size=50257, **config)
    with pytest.raises(ValueError, match=message):
        import_gpt2(tmp_path / "ckpt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_import_errors(tmp_path):
    _hf_gpt2(tmp_path / "ckpt", vocab_size=330)
    with pytest.raises(ValueError, match="pass --tokenizer"):
        import_gpt2(tmp_path / "ckpt", tmp_path / "out")
    with pytest.raises(ValueError, match="the tokenizer has 50257 ids but the model only 330"):
        import_gpt2(tmp_path / "ckpt", tmp_path / "out", tokenizer="gpt2")
    _hf_gpt2(tmp_path / "gpt2", vocab_size=50257)
    (tmp_path / "gpt2" / "model.safetensors").rename(tmp_path / "gpt2" / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="safe_serialization"):  # pickles are never loaded
        import_gpt2(tmp_path / "gpt2", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory"):
        import_gpt2(tmp_path / "nope" / "x", tmp_path / "out")
    with pytest.raises(OSError, match="neither a local directory nor a downloadable hub repository"):
        import_gpt2("llmkit-tests/no-such-model", tmp_path / "out")  # a hub id; offline here (conftest)


def test_export_then_import_gives_back_the_same_model(tmp_path, exported_chat, chat_run, chat_tokenizer):
    model, tok, _ = load_pretrained(import_gpt2(exported_chat, tmp_path / "back"))
    x = torch.randint(0, chat_tokenizer.n_vocab, (1, 30), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(model(x)[0], chat_run[1](x)[0], atol=1e-5)
    assert tok.special_tokens == chat_tokenizer.special_tokens


def test_export_refuses_what_transformers_cannot_hold(tmp_path):
    save_model(build_model("lstm", "tiny", vocab_size=300), tmp_path / "lstm")
    with pytest.raises(ValueError, match="'lstm' model; only gpt and bert"):
        export_model(tmp_path / "lstm", tmp_path / "out")
    save_model(build_model("gpt", "tiny", vocab_size=300, bias=False, qkv_bias=False), tmp_path / "nobias")
    with pytest.raises(ValueError, match="without biases"):
        export_model(tmp_path / "nobias", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- the CLI ---------------------------------------------------------------------------------------


def _cli():
    from llmkit.cli.hf import app

    root = typer.Typer()
    root.add_typer(app, name="hf")
    return root


def _run(*args: str):
    return CliRunner().invoke(_cli(), ["hf", *args])


def test_cli_export_and_import(tmp_path, chat_run):
    res = _run("export", str(chat_run[0]), "-o", str(tmp_path / "hf"))
    assert res.exit_code == 0, res.output
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    res = _run("export", str(chat_run[0]), "-o", str(tmp_path / "hf"))  # exists: refused
    assert res.exit_code == 1 and "already exists" in res.output and "--force" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert _run("export", str(chat_run[0]), "-o", str(tmp_path / "hf"), "--force").exit_code == 0
    res = _run("import", str(tmp_path / "hf"), "-o", str(tmp_path / "back"))
    assert res.exit_code == 0, res.output
    assert load_pretrained(tmp_path / "back")[2] == "gpt"


def test_cli_errors_are_one_line(tmp_path):
    save_model(build_model("nplm", "tiny", vocab_size=300), tmp_path / "nplm")
    _hf_gpt2(tmp_path / "ckpt", vocab_size=330)
    cases = [
        (("export", str(tmp_path / "missing"), "-o", str(tmp_path / "o1")), "neither a run directory"),
        (("export", str(tmp_path / "nplm"), "-o", str(tmp_path / "o2")), "'nplm' model"),
        (("import", str(tmp_path / "ckpt"), "-o", str(tmp_path / "o3")), "pass --tokenizer"),
        (("import", str(tmp_path / "ckpt"), "-o", str(tmp_path / "o4"), "--tokenizer", str(tmp_path / "none")), "unknown tokenizer"),
    ]
    for args, message in cases:
        res = _run(*args)
        assert res.exit_code == 1, (args, res.output)
        assert message in res.output and len(res.output.strip().splitlines()) == 1, res.output
        assert "Traceback" not in res.output
