"""The tool-calling loop: ask the model, run the tools it asks for, give it the results, until it
answers or the step limit is reached.

    from llmkit.agents.loop import run_agent, tool_model
    from llmkit.agents.tools import calculator
    result = run_agent("What is 1234 * 5678?", tool_model("openai:http://127.0.0.1:8000/v1#mymodel"), [calculator])
    print(result.answer); result.save("transcript.jsonl")

A model is anything with ``step(messages, tool_schemas) -> assistant message``. Two ship:
:class:`OpenAIToolModel` speaks OpenAI's tool-calling format (``tools`` in the request,
``tool_calls`` in the reply, ``tool`` messages with ``tool_call_id`` back), so any compatible
server with tools works; :class:`LlmkitToolModel` uses llmkit's own chat template's tool turns
(``<|tool_call|>{json}<|/tool_call|>`` ... ``<|tool|>result``), so models chat-tuned here work.

The transcript is kept in one neutral form: OpenAI-style messages whose tool calls are
``{"id", "name", "arguments"}`` (arguments as the model wrote them) and whose tool results
carry ``tool_call_id`` and ``name``. Nothing the model writes crashes the loop: unknown tools,
bad JSON, bad arguments and failing tools come back to it as ``error: ...`` results, and a
tool call it botched into plain text is answered with an error too.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from llmkit.agents.schema import call_tool, tool_schema

__all__ = ["AgentResult", "LlmkitToolModel", "OpenAIToolModel", "run_agent", "tool_model"]

INVALID_CALL = "invalid_tool_call"
"""The name a botched tool call is recorded under in the transcript."""
DEFAULT_SYSTEM = "You are a helpful assistant. Use the tools when they help; answer briefly when you have the answer."


@dataclass
class AgentResult:
    answer: str
    messages: list[dict]
    steps: int
    stopped: str
    """answer (the model answered), or step limit."""
    tool_calls: int = 0
    errors: int = field(default=0)
    """Tool results that were errors."""

    def transcript(self) -> str:
        lines = []
        for m in self.messages:
            if m["role"] == "assistant" and m.get("tool_calls"):
                for c in m["tool_calls"]:
                    lines.append(f"assistant -> {c['name']}({c['arguments'] if isinstance(c['arguments'], str) else json.dumps(c['arguments'])})")
                if m.get("content"):
                    lines.append(f"assistant: {m['content']}")
            elif m["role"] == "tool":
                lines.append(f"{m['name']} -> {m['content']}")
            else:
                lines.append(f"{m['role']}: {m.get('content') or ''}")
        return "\n".join(lines)

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """The messages as JSONL, one per line, written atomically."""
        from llmkit._io import atomic_write_text, refuse_overwrite
        from pathlib import Path

        refuse_overwrite([Path(path)], overwrite)
        atomic_write_text(path, "".join(json.dumps(m, ensure_ascii=False) + "\n" for m in self.messages))


def run_agent(task: str, model, tools: Sequence[Callable] | Mapping[str, Callable], *, max_steps: int = 6, system: str | None = DEFAULT_SYSTEM,
              log: Callable[[str], None] = lambda s: None) -> AgentResult:
    """Work on ``task`` with ``model`` and ``tools`` for at most ``max_steps`` model calls."""
    if max_steps < 1:
        raise ValueError("max_steps must be >= 1")
    table = dict(tools) if isinstance(tools, Mapping) else {fn.__name__: fn for fn in tools}
    schemas = [tool_schema(fn) for fn in table.values()]
    messages: list[dict] = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": task}]
    n_calls = n_errors = 0
    for step in range(1, max_steps + 1):
        reply = model.step(messages, schemas)
        calls = reply.get("tool_calls") or []
        if not calls and reply.get("malformed"):  # it tried to call a tool but the markup did not parse: say so
            messages.append({"role": "assistant", "content": "", "tool_calls": [{"id": f"invalid_{step}", "name": INVALID_CALL, "arguments": reply.get("content") or ""}]})
            messages.append({"role": "tool", "tool_call_id": f"invalid_{step}", "name": INVALID_CALL,
                             "content": "error: that tool call is not valid JSON with a \"name\" and \"arguments\"; try again"})
            n_errors += 1
            continue
        messages.append({"role": "assistant", "content": reply.get("content") or "", **({"tool_calls": calls} if calls else {})})
        if not calls:
            log(f"answer: {reply.get('content')}")
            return AgentResult(reply.get("content") or "", messages, step, "answer", n_calls, n_errors)
        for c in calls:
            result = call_tool(table, c["name"], c["arguments"])
            n_calls += 1
            n_errors += result.startswith("error:")
            log(f"{c['name']}({c['arguments'] if isinstance(c['arguments'], str) else json.dumps(c['arguments'])}) -> {result[:200]}")
            messages.append({"role": "tool", "tool_call_id": c["id"], "name": c["name"], "content": result})
    last = next((m.get("content") for m in reversed(messages) if m["role"] == "assistant" and m.get("content")), "")
    return AgentResult(last, messages, max_steps, "step limit", n_calls, n_errors)


class OpenAIToolModel:
    """Any OpenAI-compatible chat endpoint with tool calling."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, temperature: float = 0.0, max_tokens: int | None = None,
                 timeout: float = 60):
        """``max_tokens`` None leaves the reply's length to the server (up to the context window)."""
        from llmkit.remote_backends import OpenAIBackend

        self.backend = OpenAIBackend(base_url, model, api_key, timeout)
        self.temperature, self.max_tokens = temperature, max_tokens

    def step(self, messages: list[dict], schemas: list[dict]) -> dict:
        body = {"model": self.backend.model, "messages": [_to_openai(m) for m in messages], "temperature": self.temperature}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if schemas:
            body["tools"] = schemas
        reply = self.backend._post("chat/completions", body)
        try:
            msg = reply["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise OSError(f"unexpected answer from chat/completions: {json.dumps(reply)[:200]}") from None
        calls = [{"id": c.get("id") or f"call_{uuid.uuid4().hex[:8]}", "name": c["function"]["name"], "arguments": c["function"].get("arguments", "")}
                 for c in msg.get("tool_calls") or [] if c.get("function", {}).get("name")]
        return {"content": msg.get("content") or "", "tool_calls": calls}


def _to_openai(m: dict) -> dict:
    if m["role"] == "assistant" and m.get("tool_calls"):
        return {"role": "assistant", "content": m.get("content") or None, "tool_calls": [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"] if isinstance(c["arguments"], str)
                                                              else json.dumps(c["arguments"])}} for c in m["tool_calls"]]}
    if m["role"] == "tool":
        return {"role": "tool", "tool_call_id": m["tool_call_id"], "content": m["content"]}
    return {"role": m["role"], "content": m.get("content") or ""}


class LlmkitToolModel:
    """An llmkit GPT chat-tuned with llmkit's template (``llmkit finetune sft``): tool calls
    are the template's ``<|tool_call|>`` JSON, results its ``<|tool|>`` turns."""

    def __init__(self, run: str | os.PathLike, *, max_new_tokens: int = 128, temperature: float = 0.0):
        from llmkit.chat import ChatTemplate, has_chat_tokens
        from llmkit.inference import load_pretrained

        self.model, self.tokenizer, kind = load_pretrained(run)
        if kind != "gpt" or not has_chat_tokens(self.tokenizer):
            raise ValueError(f"{run} is not a chat-tuned llmkit GPT (llmkit finetune sft): it has no tool-call template")
        self.template = ChatTemplate(self.tokenizer)
        self.max_new_tokens, self.temperature = max_new_tokens, temperature

    def step(self, messages: list[dict], schemas: list[dict]) -> dict:
        from llmkit.chat import TOOL_CALL, parse_assistant
        from llmkit.generation import generate

        history = [_to_template(m) for m in messages]
        ids = generate(self.model, self.template.prompt_ids(history), self.max_new_tokens, stop_tokens=self.template.stop_ids,
                       temperature=self.temperature)
        reply = parse_assistant(self.tokenizer.decode(ids))
        calls = [{"id": f"call_{uuid.uuid4().hex[:8]}", "name": c["name"], "arguments": c["arguments"]} for c in reply["tool_calls"]]
        return {"content": reply["content"], "tool_calls": calls, "malformed": not calls and TOOL_CALL in reply["content"]}


def _to_template(m: dict) -> dict:
    if m["role"] == "assistant" and m.get("tool_calls"):
        calls = []
        for c in m["tool_calls"]:
            args = c["arguments"]
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except json.JSONDecodeError:
                    args = {"_raw": args}
            calls.append({"name": c["name"], "arguments": args if isinstance(args, dict) else {"_raw": args}})
        return {"role": "assistant", "content": m.get("content") or "", "tool_calls": calls}
    if m["role"] == "tool":
        return {"role": "tool", "name": m.get("name", ""), "content": m["content"]}
    return {"role": m["role"], "content": m.get("content") or ""}


def tool_model(spec: str, **kw):
    """``openai:URL#MODEL`` (an OpenAI-compatible server with tools) or ``llmkit:RUN`` / a run
    directory (a model chat-tuned here)."""
    if spec.startswith("openai:"):
        url, _, name = spec[len("openai:"):].partition("#")
        if not name:
            raise ValueError("an openai: backend needs the model after '#': openai:http://host:8000/v1#MODEL")
        return OpenAIToolModel(url, name, **kw)
    run = spec[len("llmkit:"):] if spec.startswith("llmkit:") else spec
    return LlmkitToolModel(run, **kw)
