"""Tool calling through ``llmkit serve`` for a model chat-tuned with llmkit's template: the
reply's ``<|tool_call|>`` markup comes back in OpenAI's ``tool_calls`` shape, and tool results
go in as ``tool`` messages. What the model writes is scripted (a stepper that emits given
tokens), so the test is about the server and the wire format; the outside truth is the
``openai`` client, which parses them, and llmkit's own agent loop driving the server."""

from __future__ import annotations

import json

import openai
import pytest
import torch

from llmkit.agents.loop import run_agent, tool_model
from llmkit.agents.tools import calculator
from llmkit.agents.schema import tool_schema
from llmkit.chat import ensure_chat_tokens
from llmkit.serve.app import create_app
from llmkit.serve.engine import ByteDetokenizer, Engine
from llmkit.serve.models import load_served_model
from llmkit.tokenizer import Tokenizer
from serve_testutils import TEXTS, ServerThread, tiny_run

CALL = '<|tool_call|>{"name": "calculator", "arguments": {"expression": "6 * 7"}}<|/tool_call|><|end|>'
ANSWER = "The answer is 42.<|end|>"


class ScriptedStepper:
    """Writes CALL when the prompt has no tool result yet, ANSWER after one."""

    batched = True
    device = torch.device("cpu")

    def __init__(self, tok: Tokenizer, context_length: int = 512):
        self.tok, self.context_length = tok, context_length
        self.tool_id = tok.special_tokens["<|tool|>"]
        self.plan: dict[int, list[int]] = {}

    def _logits(self, t: int) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.tensor(t), self.tok.n_vocab).float() * 1000  # certain even when sampled

    def prefill(self, slot, ids):
        text = ANSWER if self.tool_id in ids else CALL
        self.plan[slot] = self.tok.encode(text, allowed_special="all")
        return self._logits(self.plan[slot].pop(0))

    def decode(self, slots, tokens):
        return torch.stack([self._logits(self.plan[s].pop(0)) for s in slots])

    def free(self, slot):
        self.plan.pop(slot, None)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tok = ensure_chat_tokens(Tokenizer.train(TEXTS * 10, 300, pattern="gpt4"))
    model = load_served_model(tiny_run(tmp_path_factory.mktemp("tools") / "agent", tok, context_length=512), device="cpu")
    model.engine.close()
    model.engine = Engine(ScriptedStepper(tok), lambda: ByteDetokenizer(tok.decode_bytes), max_batch=2)
    plain = load_served_model(tiny_run(tmp_path_factory.mktemp("tools") / "plain"), device="cpu")
    with ServerThread(create_app([model, plain])) as s:
        yield s


def test_a_tool_call_comes_back_in_openais_shape(server):
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    tools = [tool_schema(calculator)]
    r = c.chat.completions.create(model="agent", messages=[{"role": "user", "content": "What is 6 * 7?"}], tools=tools)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.function.name == "calculator" and json.loads(call.function.arguments) == {"expression": "6 * 7"}
    follow = c.chat.completions.create(model="agent", tools=tools, messages=[
        {"role": "user", "content": "What is 6 * 7?"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "42"}])
    assert follow.choices[0].message.content == "The answer is 42." and follow.choices[0].finish_reason == "stop"
    chunks = list(c.chat.completions.create(model="agent", messages=[{"role": "user", "content": "6 * 7?"}], tools=tools, stream=True))
    deltas = [ch.choices[0].delta for ch in chunks if ch.choices]
    assert deltas[0].tool_calls[0].function.name == "calculator" and chunks[-1].usage.completion_tokens > 0


def test_llmkits_agent_loop_drives_the_server(server):
    r = run_agent("What is 6 * 7?", tool_model(f"openai:{server.url}/v1#agent"), [calculator])
    assert r.answer == "The answer is 42." and r.tool_calls == 1 and r.errors == 0
    assert [m["role"] for m in r.messages] == ["system", "user", "assistant", "tool", "assistant"]


def test_tools_for_a_model_that_cannot_call_them_is_a_400(server):
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="cannot call tools"):
        c.chat.completions.create(model="plain", messages=[{"role": "user", "content": "hi"}], tools=[tool_schema(calculator)])
    with pytest.raises(openai.BadRequestError, match="'tools' must be a list"):
        c.chat.completions.create(model="agent", messages=[{"role": "user", "content": "hi"}], tools=[{"type": "function"}])
    with pytest.raises(openai.BadRequestError, match="tool message must follow"):
        c.chat.completions.create(model="agent", messages=[{"role": "tool", "tool_call_id": "x", "content": "42"}])
