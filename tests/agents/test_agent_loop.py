"""The tool-calling loop, with scripted models (what a model says is fixed; what the loop does
with it is under test), an OpenAI-compatible stub server speaking the tool-calling wire format,
and llmkit's own chat template."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from llmkit.agents.loop import LlmkitToolModel, run_agent, tool_model
from llmkit.agents.tools import calculator


class Scripted:
    """Replies in order; records what it was shown."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.seen = []

    def step(self, messages, schemas):
        self.seen.append((json.loads(json.dumps(messages)), schemas))
        return self.replies.pop(0)


def test_tool_calls_run_errors_go_back_and_the_answer_ends_it(tmp_path):
    model = Scripted([
        {"content": "", "tool_calls": [{"id": "a", "name": "calculator", "arguments": '{"expression": "1234 * 5678"}'},
                                       {"id": "b", "name": "calculator", "arguments": '{"expression": '}]},
        {"content": "", "tool_calls": [{"id": "c", "name": "teleport", "arguments": {}}]},
        {"content": "1234 * 5678 = 7006652."},
    ])
    r = run_agent("What is 1234 * 5678?", model, [calculator])
    assert r.stopped == "answer" and r.answer == "1234 * 5678 = 7006652." and r.steps == 3
    assert (r.tool_calls, r.errors) == (3, 2)
    tools = [m for m in r.messages if m["role"] == "tool"]
    assert [t["tool_call_id"] for t in tools] == ["a", "b", "c"]
    assert tools[0]["content"] == "7006652" and tools[1]["content"].startswith("error: the arguments are not valid JSON")
    assert tools[2]["content"].startswith("error: unknown tool 'teleport'")
    assert model.seen[1][0][-1]["content"] == tools[1]["content"]  # the model saw the error before its next step
    assert model.seen[0][1][0]["function"]["name"] == "calculator"  # and the tool's schema
    assert "calculator -> 7006652" in r.transcript()
    r.save(tmp_path / "t.jsonl")
    assert [json.loads(line)["role"] for line in (tmp_path / "t.jsonl").read_text().splitlines()][:3] == ["system", "user", "assistant"]
    with pytest.raises(FileExistsError):
        r.save(tmp_path / "t.jsonl")


def test_the_step_limit_stops_a_model_that_never_answers():
    model = Scripted([{"content": f"try {i}", "tool_calls": [{"id": str(i), "name": "calculator", "arguments": {"expression": "1+1"}}]} for i in range(3)])
    r = run_agent("loop forever", model, [calculator], max_steps=3)
    assert r.stopped == "step limit" and r.steps == 3 and r.answer == "try 2" and r.tool_calls == 3


class _OpenAIStub(BaseHTTPRequestHandler):
    requests: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        if not any(m["role"] == "tool" for m in body["messages"]):
            msg = {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": "{\"expression\": \"21 * 2\"}"}}]}
        else:
            msg = {"role": "assistant", "content": "It is 42."}
        data = json.dumps({"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


def test_openai_tool_calling_wire_format():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OpenAIStub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        model = tool_model(f"openai:http://127.0.0.1:{server.server_port}/v1#stub")
        r = run_agent("What is 21 * 2?", model, [calculator])
    finally:
        server.shutdown()
    assert r.answer == "It is 42." and r.tool_calls == 1
    first, second = _OpenAIStub.requests[-2:]
    assert first["tools"][0]["type"] == "function" and first["tools"][0]["function"]["name"] == "calculator"
    call_msg = second["messages"][-2]
    assert call_msg["tool_calls"][0] == {"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": "{\"expression\": \"21 * 2\"}"}}
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "42"}


def test_llmkit_models_use_the_chat_templates_tool_turns(tmp_path, monkeypatch):
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent.parent / "serve"))
    from serve_testutils import TEXTS, tiny_run

    from llmkit.chat import ensure_chat_tokens
    from llmkit.tokenizer import Tokenizer

    tok = ensure_chat_tokens(Tokenizer.train(TEXTS * 10, 300, pattern="gpt4"))
    run = tiny_run(tmp_path / "run", tok)
    model = LlmkitToolModel(run)
    replies = iter(['<|tool_call|>{"name": "calculator", "arguments": {"expression": "6 * 7"}}<|/tool_call|><|end|>',
                    '<|tool_call|>{"name": broken<|/tool_call|><|end|>',
                    "The answer is 42.<|end|>"])
    prompts = []

    def fake_generate(m, ids, n, **kw):  # what the model "writes"; the loop and the template are real
        prompts.append(tok.decode(ids))
        return tok.encode(next(replies), allowed_special="all")

    monkeypatch.setattr("llmkit.generation.generate", fake_generate)
    r = run_agent("What is 6 * 7?", model, [calculator], system=None)
    assert r.answer == "The answer is 42." and r.tool_calls == 1 and r.errors == 1
    assert "<|tool|>42<|end|>" in prompts[1]  # the result went back as a tool turn
    assert "not valid JSON" in prompts[2]  # the botched call was answered with an error
    with pytest.raises(ValueError, match="not a chat-tuned"):
        LlmkitToolModel(tiny_run(tmp_path / "plain"))
    assert torch.is_tensor(torch.zeros(1))


def test_agent_cli(tmp_path):
    import typer
    from typer.testing import CliRunner

    from llmkit.cli.agent import agent

    app = typer.Typer()
    app.command()(agent)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OpenAIStub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend = f"openai:http://127.0.0.1:{server.server_port}/v1#stub"
        r = CliRunner().invoke(app, ["What is 21 * 2?", "--backend", backend, "--transcript", str(tmp_path / "t.jsonl")])
        assert r.exit_code == 0, r.output
        assert "It is 42." in r.stdout and "calculator" in r.output
        assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 5  # system, user, call, result, answer
        bad = CliRunner().invoke(app, ["x", "--backend", backend, "--tools", "calculator,teleport"])
        assert bad.exit_code != 0 and "unknown tool 'teleport'" in bad.output
        again = CliRunner().invoke(app, ["x", "--backend", backend, "--transcript", str(tmp_path / "t.jsonl")])
        assert again.exit_code != 0 and "already exists" in again.output
        bare = CliRunner().invoke(app, ["What is 21 * 2?", "--backend", backend, "--system", "", "--transcript", str(tmp_path / "t2.jsonl")])
        assert bare.exit_code == 0 and len((tmp_path / "t2.jsonl").read_text().splitlines()) == 4  # no system message
        own = CliRunner().invoke(app, ["What is 21 * 2?", "--backend", backend, "--system", "Be terse.", "--transcript", str(tmp_path / "t3.jsonl")])
        assert own.exit_code == 0 and json.loads((tmp_path / "t3.jsonl").read_text().splitlines()[0]) == {"role": "system", "content": "Be terse."}
        for opt, value, message in (("--rag-k", "0", "--rag-k must be between 1 and 10"), ("--rag-chars", "5", "--rag-chars must be >= 20")):
            r = CliRunner().invoke(app, ["x", "--backend", backend, opt, value])
            assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output
    finally:
        server.shutdown()
    down = CliRunner().invoke(app, ["x", "--backend", "openai:http://127.0.0.1:9/v1#m"])
    assert down.exit_code != 0 and "cannot reach" in down.output and "Traceback" not in down.output
