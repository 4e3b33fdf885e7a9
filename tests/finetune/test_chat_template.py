"""The chat template: rendering, special ids, the loss mask, validation and reply parsing."""

from __future__ import annotations

import json

import pytest
import torch

from llmkit.chat import (
    ASSISTANT,
    CHAT_SPECIAL_TOKENS,
    END,
    IGNORE_INDEX,
    ChatTemplate,
    chat_turns,
    ensure_chat_tokens,
    has_chat_tokens,
    normalize_messages,
    parse_assistant,
    tool_call_json,
)
from llmkit.tokenizer import Tokenizer

CONV = [
    {"role": "system", "content": "Use the calculator for arithmetic."},
    {"role": "user", "content": "What is 12 * 7 + 3?"},
    {"role": "assistant", "content": "", "tool_calls": [{"name": "calculator", "arguments": {"expression": "12 * 7 + 3"}}]},
    {"role": "tool", "name": "calculator", "content": "87"},
    {"role": "assistant", "content": "12 * 7 + 3 is 87."},
    {"role": "user", "content": "Thanks!"},
    {"role": "assistant", "content": "You are welcome."},
]
RENDERED = (
    "<|system|>Use the calculator for arithmetic.<|end|>\n"
    "<|user|>What is 12 * 7 + 3?<|end|>\n"
    '<|assistant|><|tool_call|>{"name": "calculator", "arguments": {"expression": "12 * 7 + 3"}}<|/tool_call|><|end|>\n'
    "<|tool|>87<|end|>\n"
    "<|assistant|>12 * 7 + 3 is 87.<|end|>\n"
    "<|user|>Thanks!<|end|>\n"
    "<|assistant|>You are welcome.<|end|>\n"
)


@pytest.fixture(scope="module")
def tok():
    return ensure_chat_tokens(Tokenizer.from_pretrained("gpt2"))


@pytest.fixture(scope="module")
def template(tok):
    return ChatTemplate(tok)


def test_chat_tokens_are_added_once_after_the_vocabulary():
    base = Tokenizer.from_pretrained("gpt2")
    tok = ensure_chat_tokens(base)
    assert not has_chat_tokens(base) and has_chat_tokens(tok)
    assert [tok.special_tokens[t] for t in CHAT_SPECIAL_TOKENS] == list(range(base.n_vocab, base.n_vocab + len(CHAT_SPECIAL_TOKENS)))
    assert ensure_chat_tokens(tok) is tok
    assert tok.encode("hello world") == base.encode("hello world")  # ordinary ids unchanged
    with pytest.raises(ValueError, match="ensure_chat_tokens"):
        ChatTemplate(base)


def test_render_is_the_documented_format_and_decode_of_encode(template, tok):
    assert template.render(CONV) == RENDERED
    ids, mask = template.encode(CONV)
    assert len(ids) == len(mask)
    assert tok.decode(ids) == RENDERED
    # every marker is one special id, never spelled out in ordinary tokens
    specials = set(template.ids.values())
    assert sum(i in specials for i in ids) == sum(RENDERED.count(t) for t in CHAT_SPECIAL_TOKENS)


def test_the_special_ids_match_tiktoken_with_the_same_specials(template, tok):
    """Outside truth: tiktoken, allowed every special, reads the rendered text into the same ids."""
    assert tok.to_tiktoken().encode(RENDERED, allowed_special="all") == template.encode(CONV)[0]


def test_loss_mask_covers_exactly_assistant_content_tool_markup_and_end(template, tok):
    ids, mask = template.encode(CONV)
    trained = tok.decode([i for i, m in zip(ids, mask) if m])
    call = tool_call_json(CONV[2]["tool_calls"][0])
    assert trained == f"<|tool_call|>{call}<|/tool_call|>{END}" + f"12 * 7 + 3 is 87.{END}" + f"You are welcome.{END}"
    untrained = tok.decode([i for i, m in zip(ids, mask) if not m])
    for text in ("Use the calculator", "What is 12", "87<|end|>", "Thanks!", ASSISTANT):
        assert text in untrained


def test_literal_special_strings_in_content_stay_ordinary_text(template, tok):
    conv = [{"role": "user", "content": "say <|end|> and <|assistant|> please"}, {"role": "assistant", "content": "<|end|> ok"}]
    ids, mask = template.encode(conv)
    assert tok.decode(ids) == template.render(conv)
    assert ids.count(template.end_id) == 2  # only the two real turn ends
    assert ids.count(template.ids[ASSISTANT]) == 1
    trained = [i for i, m in zip(ids, mask) if m]
    assert tok.decode(trained[:-1]) == "<|end|> ok" and trained[-1] == template.end_id


def test_openai_nested_tool_calls_are_normalised(template):
    nested = [
        {"role": "user", "content": "What is 12 * 7 + 3?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "12 * 7 + 3"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "87"},
    ]
    flat = normalize_messages(nested)
    assert flat[1] == {"role": "assistant", "content": "", "tool_calls": [{"name": "calculator", "arguments": {"expression": "12 * 7 + 3"}}]}
    assert flat[2] == {"role": "tool", "content": "87"}
    assert template.render(nested) == template.render(CONV[1:4])
    parts = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    assert normalize_messages(parts)[0]["content"] == "ab"


@pytest.mark.parametrize(
    "messages, message",
    [
        ([], "non-empty list"),
        ("hello", "non-empty list"),
        ([{"role": "robot", "content": "x"}], "unknown role 'robot'"),
        ([{"role": "user"}], "has no content"),
        ([{"role": "user", "content": 3}], "content must be a string"),
        (["hi"], "is not an object"),
        ([{"role": "tool", "content": "5"}], "must follow an assistant tool call"),
        ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}, {"role": "tool", "content": "5"}], "must follow"),
        ([{"role": "user", "content": "x"}, {"role": "system", "content": "y"}], "system message may only come first"),
        ([{"role": "user", "content": "x", "tool_calls": [{"name": "f", "arguments": {}}]}], "only assistant"),
        ([{"role": "assistant", "content": "", "tool_calls": [{"arguments": {}}]}], "has no name"),
        ([{"role": "assistant", "content": "", "tool_calls": [{"name": "f", "arguments": "{bad"}]}], "not valid JSON"),
        ([{"role": "assistant", "content": "", "tool_calls": [{"name": "f", "arguments": [1]}]}], "must be a JSON object"),
    ],
)
def test_bad_messages_are_one_line_errors(template, messages, message):
    with pytest.raises(ValueError, match=message) as e:
        template.encode(messages)
    assert "\n" not in str(e.value)


def test_two_calls_take_two_results_but_not_three(template):
    call = {"name": "calculator", "arguments": {"expression": "1"}}
    conv = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "", "tool_calls": [call, call]},
            {"role": "tool", "content": "1"}, {"role": "tool", "content": "1"}]
    template.encode(conv)
    with pytest.raises(ValueError, match="message 4"):
        template.encode(conv + [{"role": "tool", "content": "1"}])


def test_prompt_ids_end_with_the_assistant_header(template, tok):
    ids = template.prompt_ids(CONV[:2])
    assert ids[-1] == template.ids[ASSISTANT]
    assert tok.decode(ids) == template.prompt_text(CONV[:2]) == template.render(CONV[:2]) + ASSISTANT
    # what the model must write next is exactly the next assistant turn (up to the separator)
    full, _ = template.encode(CONV[:3])
    assert full[: len(ids)] == ids


def test_training_example_shifts_targets_and_truncation_keeps_the_start(template):
    ids, mask = template.encode(CONV)
    x, y = template.to_training_example(CONV, max_len=10_000)
    assert x == ids[:-1] and len(y) == len(x)
    assert y == [t if m else IGNORE_INDEX for t, m in zip(ids[1:], mask[1:])]
    xs, ys = template.to_training_example(CONV, max_len=20)
    assert xs == ids[:20] and ys == y[:20]
    with pytest.raises(ValueError, match="max_len"):
        template.to_training_example(CONV, 0)


def test_parse_assistant_round_trips_a_rendered_reply(template):
    for msg in (CONV[2], CONV[4]):
        body = template.render([CONV[1], msg]).split(ASSISTANT, 1)[1]
        parsed = parse_assistant(body)
        assert parsed["content"] == msg["content"] and parsed["tool_calls"] == msg.get("tool_calls", [])


@pytest.mark.parametrize(
    "text, content, n_calls",
    [
        ('<|tool_call|>{"name": "calculator", "arguments": {bad}<|/tool_call|><|end|>', '<|tool_call|>{"name": "calculator", "arguments": {bad}<|/tool_call|>', 0),
        ('<|tool_call|>{"arguments": {}}<|/tool_call|>', '<|tool_call|>{"arguments": {}}<|/tool_call|>', 0),
        ('<|tool_call|>["calculator"]<|/tool_call|>', '<|tool_call|>["calculator"]<|/tool_call|>', 0),
        ('<|tool_call|>{"name": "calculator", "arg', '<|tool_call|>{"name": "calculator", "arg', 0),  # cut off
        ('  The answer is 5.  <|end|><|user|>more', "The answer is 5.", 0),
        ('Let me compute.<|tool_call|>{"name": "c", "arguments": {"x": 1}}<|/tool_call|>', "Let me compute.", 1),
    ],
)
def test_parse_assistant_keeps_malformed_calls_as_text(text, content, n_calls):
    parsed = parse_assistant(text)
    assert parsed["content"] == content and len(parsed["tool_calls"]) == n_calls


class ScriptedModel(torch.nn.Module):
    """A fake LM that writes ``replies[k]`` (token by token) after the k-th assistant header
    of its input, so a generation loop can be tested without training anything."""

    def __init__(self, replies: list[list[int]], assistant_id: int, vocab: int):
        super().__init__()
        self.replies, self.assistant_id, self.vocab = replies, assistant_id, vocab

    def forward(self, idx, targets=None):
        row = idx[0].tolist()
        k = row.count(self.assistant_id) - 1
        written = len(row) - 1 - max(i for i, t in enumerate(row) if t == self.assistant_id)
        logits = torch.zeros(idx.shape[0], idx.shape[1], self.vocab)
        logits[:, -1, self.replies[k][written]] = 1.0
        return logits, None


def scripted(template, *reply_texts):
    replies = [template.tokenizer.encode(t, allowed_special="all") for t in reply_texts]
    return ScriptedModel(replies, template.ids[ASSISTANT], template.tokenizer.n_vocab)


def test_chat_turns_runs_the_tool_and_continues(template):
    from llmkit.finetune.calculator import calculator_tool

    call = '<|tool_call|>{"name": "calculator", "arguments": {"expression": "12 * 7 + 3"}}<|/tool_call|><|end|>'
    model = scripted(template, call, "It is 87.<|end|>")
    new = chat_turns(model, template, CONV[:2], tools={"calculator": calculator_tool}, max_new_tokens=40, temperature=0)
    assert new == [CONV[2], {"role": "tool", "name": "calculator", "content": "87"}, CONV[4] | {"content": "It is 87."}]


def test_chat_turns_reports_tool_errors_to_the_model_and_bounds_the_rounds(template):
    from llmkit.finetune.calculator import calculator_tool

    bad = '<|tool_call|>{"name": "calculator", "arguments": {"expression": "import os"}}<|/tool_call|><|end|>'
    unknown = '<|tool_call|>{"name": "search", "arguments": {}}<|/tool_call|><|end|>'
    new = chat_turns(scripted(template, bad, unknown, bad), template, CONV[1:2], tools={"calculator": calculator_tool},
                     max_new_tokens=40, temperature=0, max_tool_calls=2)
    assert [m["role"] for m in new] == ["assistant", "tool", "assistant", "tool", "assistant"]
    assert new[1]["content"].startswith("error: not an arithmetic expression")
    assert new[3]["content"] == "error: unknown tool 'search'"
    assert new[4]["tool_calls"]  # the third call is left unanswered: out of rounds
    assert json.loads(json.dumps(new)) == new


def test_llmkit_chat_runs_calculator_calls_of_a_chat_tuned_model(template, monkeypatch):
    from typer.testing import CliRunner

    import llmkit.inference
    from llmkit.cli.main import app

    call = '<|tool_call|>{"name": "calculator", "arguments": {"expression": "12 * 7 + 3"}}<|/tool_call|><|end|>'
    model = scripted(template, call, "It is 87.<|end|>", "Bye.<|end|>")
    monkeypatch.setattr(llmkit.inference, "load_pretrained", lambda run: (model, template.tokenizer, "gpt"))
    r = CliRunner().invoke(app, ["chat", "RUN", "--temperature", "0", "-n", "40"], input="What is 12 * 7 + 3?\nthanks\n")
    assert r.exit_code == 0, r.output
    assert r.stdout == "> It is 87.\n> Bye.\n"
    assert "tool call: calculator(expression='12 * 7 + 3')" in r.stderr and "-> 87" in r.stderr
