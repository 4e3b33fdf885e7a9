"""Chat tuning end to end on a tiny GPT: vocabulary growth, the masked loss going down, the
saved run loading and talking, and the ``sft`` command."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from llmkit.chat import CHAT_SPECIAL_TOKENS, ChatTemplate, ensure_chat_tokens, has_chat_tokens
from llmkit.finetune.sft import SFTConfig, collate, grow_vocab, train_sft
from llmkit.finetune.sft_data import default_sft_dataset, load_conversations
from llmkit.models.zoo import build_model, save_model
from llmkit.tokenizer import Tokenizer

runner = CliRunner()
TINY = dict(n_embd=64, n_layer=2, n_head=4, context_length=128)


@pytest.fixture(scope="module")
def convs():
    return default_sft_dataset(n_arith=64, n_qa=16, seed=1)


@pytest.fixture(scope="module")
def base(convs, tmp_path_factory):
    """An untrained tiny GPT with a 384-id tokenizer learnt from the conversations' text."""
    tok = Tokenizer.train([m["content"] for c in convs for m in c] * 2, 384)
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("base")
    save_model(build_model("gpt", "tiny", vocab_size=tok.n_vocab, **TINY), d)
    tok.save(d)
    return d


@pytest.fixture(scope="module")
def sft_run(base, convs, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "run"
    cfg = SFTConfig(steps=40, batch_size=8, lr=3e-3, warmup=5, eval_every=20, log_every=10, device="cpu")
    lines: list[str] = []
    metrics = train_sft(base, convs, out, cfg, log=lines.append)
    return out, metrics, lines


@pytest.mark.parametrize("tie", [True, False])
def test_grow_vocab_keeps_old_logits_and_starts_new_rows_at_the_mean(tie):
    torch.manual_seed(0)
    tok = Tokenizer.from_merges([], "gpt4", ["<|endoftext|>"])  # 257 ids
    model = build_model("gpt", "tiny", vocab_size=tok.n_vocab, tie_weights=tie, **{k: v for k, v in TINY.items()}).eval()
    chat_tok = ensure_chat_tokens(tok)
    grown = grow_vocab(model, tok, chat_tok).eval()
    assert grown.config.vocab_size == chat_tok.n_vocab == 257 + len(CHAT_SPECIAL_TOKENS)
    x = torch.randint(0, 257, (2, 16))
    old, new = model(x)[0], grown(x)[0]
    assert torch.allclose(new[..., :257], old, atol=1e-6)
    for w_old, w_new in ((model.transformer.wte.weight, grown.transformer.wte.weight), (model.lm_head.weight, grown.lm_head.weight)):
        assert torch.allclose(w_new[257:], w_old.mean(0).expand(len(CHAT_SPECIAL_TOKENS), -1))
    assert (grown.lm_head.weight is grown.transformer.wte.weight) == tie
    assert grow_vocab(grown, chat_tok, chat_tok) is grown  # nothing new: unchanged


def test_collate_pads_inputs_and_ignores_padding_in_targets():
    x, y = collate([([1, 2, 3], [2, -100, 4]), ([5], [6])], pad_id=0, device=torch.device("cpu"))
    assert x.tolist() == [[1, 2, 3], [5, 0, 0]] and y.tolist() == [[2, -100, 4], [6, -100, -100]]


def test_sft_lowers_the_assistant_token_loss(sft_run):
    out, m, lines = sft_run
    assert m["val_loss"] < m["initial_val_loss"] - 1.0, m
    assert m["train_loss"] < m["first_train_loss"]
    assert m["train_conversations"] + m["val_conversations"] == 80 and m["val_conversations"] >= 1
    assert lines[-1] == f"wrote {out}" and any("val loss" in ln for ln in lines)
    records = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["step"] == 0 and records[-1]["step"] == 40
    assert json.loads((out / "sft.json").read_text())["val_loss"] == m["val_loss"]


def test_the_run_loads_and_generates_with_the_template(sft_run):
    from llmkit.finetune.calculator import calculator_tool
    from llmkit.chat import chat_turns
    from llmkit.generation import generate_text
    from llmkit.inference import load_pretrained

    out, _, _ = sft_run
    model, tok, kind = load_pretrained(out)
    assert kind == "gpt" and has_chat_tokens(tok) and model.config.vocab_size == tok.n_vocab
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["llmkit"]["chat_template"] == "llmkit-chat-v1"
    described = json.loads((out / "model" / "chat_template.json").read_text())
    assert described["special_tokens"] == {t: tok.special_tokens[t] for t in CHAT_SPECIAL_TOKENS}
    assert isinstance(generate_text(model, tok, "What is", 5, temperature=0), str)
    new = chat_turns(model, ChatTemplate(tok), [{"role": "user", "content": "What is 2 + 2?"}],
                     tools={"calculator": calculator_tool}, max_new_tokens=30, temperature=0)
    assert new and new[-1]["role"] == "assistant"


def test_llmkit_chat_uses_the_template_for_a_chat_tuned_run(sft_run):
    from llmkit.cli.main import app

    out, _, _ = sft_run
    r = runner.invoke(app, ["chat", str(out), "-n", "12", "--seed", "0"], input="hello\n/reset\nWhat is 2 + 2?\n/exit\nignored\n")
    assert r.exit_code == 0, r.output
    assert r.stdout.count("> ") == 2 and "chat-tuned" in r.stderr


def test_train_sft_refusals(base, convs, sft_run, tmp_path):
    out, _, _ = sft_run
    cfg = SFTConfig(steps=1, batch_size=2, device="cpu")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        train_sft(base, convs, out, cfg)
    with pytest.raises(ValueError, match="too few"):
        train_sft(base, convs[:1], tmp_path / "one", cfg)
    with pytest.raises(ValueError, match="overlaps"):
        train_sft(base, convs, base, cfg, overwrite=True)
    with pytest.raises(ValueError, match="overlaps"):  # a parent of the base would delete it too
        train_sft(base, convs, base.parent, cfg, overwrite=True)
    assert (base / "model.safetensors").is_file()
    bert_dir = tmp_path / "bert"
    tok = Tokenizer.load(base)
    save_model(build_model("bert", "tiny", vocab_size=tok.n_vocab), bert_dir)
    tok.save(bert_dir)
    with pytest.raises(ValueError, match="needs a GPT"):
        train_sft(bert_dir, convs, tmp_path / "b", cfg)
    assert not (tmp_path / "one").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("kw, message", [(dict(steps=0), "steps must be >= 1"), (dict(lr=0.0), "lr must be"),
                                         (dict(max_len=1), "max-len"), (dict(val_fraction=1.0), "val_fraction"),
                                         (dict(device="tpu"), "device")])
def test_config_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        SFTConfig(**kw)


# -- the command -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli():
    from llmkit.cli.sft import sft

    app = typer.Typer()
    app.command("sft")(sft)
    app.callback()(lambda: None)  # a group, so the command is invoked by name as under `llmkit finetune`
    return app


def test_cli_exports_the_generated_data(cli, tmp_path):
    path = tmp_path / "data.jsonl"
    r = runner.invoke(cli, ["sft", "--export-data", str(path), "--n-arith", "6", "--n-qa", "3", "--seed", "2"])
    assert r.exit_code == 0, r.output
    assert load_conversations(path) == default_sft_dataset(6, 3, seed=2)
    again = runner.invoke(cli, ["sft", "--export-data", str(path), "--n-arith", "1", "--n-qa", "0"])
    assert again.exit_code == 1 and "--force" in again.stderr and len(again.stderr.strip().splitlines()) == 1


def test_cli_trains_from_a_jsonl_file(cli, base, convs, tmp_path):
    from llmkit.finetune.sft_data import save_conversations

    data = save_conversations(tmp_path / "d.jsonl", convs[:12])
    out = tmp_path / "run"
    args = ["sft", str(base), "--data", str(data), "-o", str(out), "--steps", "3", "--batch-size", "4", "--max-len", "64", "--device", "cpu"]
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "val loss on assistant tokens" in r.stdout and (out / "model" / "model.safetensors").is_file()
    again = runner.invoke(cli, args)
    assert again.exit_code == 1 and "--force" in again.stderr
    assert runner.invoke(cli, args + ["--force"]).exit_code == 0


def test_cli_trains_a_tool_user_with_digits_split(cli, base, tmp_path):
    """--data tools --split-digits: the run's tokenizer keeps the base's ranks and splits
    numbers into digits; the template's tool turns encode with it."""
    from llmkit.agents.loop import LlmkitToolModel
    from llmkit.chat import ChatTemplate

    out = tmp_path / "tools"
    r = runner.invoke(cli, ["sft", str(base), "--data", "tools", "--n-arith", "20", "--n-large", "10", "--n-rag", "6", "-o", str(out),
                            "--steps", "2", "--batch-size", "4", "--split-digits", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    tok = Tokenizer.load(out / "model")
    base_tok = Tokenizer.load(base)
    assert tok.pattern.name == "gpt4-digits" and tok.ranks == base_tok.ranks
    pieces = [tok.decode([i]) for i in tok.encode("4821 * 377 = 1817517")]
    assert "".join(p for p in pieces if p.isdigit()) == "48213771817517" and all(len(p) == 1 for p in pieces if any(c.isdigit() for c in p))
    model = LlmkitToolModel(out)  # loads with the digit-splitting tokenizer and the template
    assert isinstance(model.template, ChatTemplate) and model.tokenizer.pattern.name == "gpt4-digits"


@pytest.mark.parametrize(
    "args, message",
    [
        (["sft", "BASE"], "--output"),
        (["sft", "BASE", "-o", "OUT", "--steps", "0"], "steps must be >= 1"),
        (["sft", "BASE", "-o", "OUT", "--data", "/no/such.jsonl"], "/no/such.jsonl"),
        (["sft", "BASE", "-o", "OUT", "--data", "BAD"], "line 1 is not JSON"),
        (["sft", "/no/such/run", "-o", "OUT", "--n-arith", "4", "--n-qa", "0"], "neither a run directory"),
        (["sft", "BASE", "-o", "OUT", "--n-qa", "100000"], "usable functions"),
    ],
)
def test_cli_errors_are_one_line(cli, base, tmp_path, args, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    subst = {"BASE": str(base), "OUT": str(tmp_path / "out"), "BAD": str(bad)}
    r = runner.invoke(cli, [subst.get(a, a) for a in args])
    assert r.exit_code == 1 and message in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1
