"""Reading an OpenAI-style request body for :mod:`llmkit.serve.app`: every field checked,
every mistake an :class:`APIError` (a 4xx in OpenAI's error shape), and a generated reply's
tool-call markup shaped as OpenAI ``tool_calls``."""

from __future__ import annotations

import json
import uuid

from llmkit.serve.engine import SamplingParams
from llmkit.serve.models import ServedModel

__all__ = ["APIError", "messages", "number", "offers_tools", "sampling", "stops", "tool_message"]

MAX_N = 8
MAX_STOPS = 4


class APIError(Exception):
    """An error answered in OpenAI's shape with ``status``."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code, self.retry_after = status, message, type, param, code, retry_after

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def number(body: dict, key: str, default, lo: float, hi: float, *, integer: bool = False):
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not float(v).is_integer()):
        raise APIError(400, f"'{key}' must be {'an integer' if integer else 'a number'}, got {json.dumps(v)[:40]}", param=key)
    if not lo <= v <= hi:
        raise APIError(400, f"'{key}' must be between {lo:g} and {hi:g}, got {v}", param=key)
    return int(v) if integer else float(v)


def stops(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    given = [stop] if isinstance(stop, str) else stop
    if not isinstance(given, list) or not all(isinstance(s, str) and s for s in given) or len(given) > MAX_STOPS:
        raise APIError(400, f"'stop' must be a non-empty string or a list of up to {MAX_STOPS} of them", param="stop")
    return given


def sampling(body: dict, model: ServedModel, prompt_len: int, stop_tokens: frozenset[int], default_max: int | None,
              prompt_param: str = "prompt") -> tuple[SamplingParams, int]:
    room = model.context_length - prompt_len
    if room < 1:
        raise APIError(400, f"the prompt has {prompt_len} tokens; the model's context window is {model.context_length} tokens", param=prompt_param,
                       code="context_length_exceeded")
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = number(body, key, default_max if default_max is not None else room, 1, 1e9, integer=True)
    if prompt_len + max_tokens > model.context_length:
        raise APIError(400, f"the prompt ({prompt_len} tokens) plus {key} ({max_tokens}) exceed the model's context window of "
                       f"{model.context_length} tokens; ask for at most {room}", param=key, code="context_length_exceeded")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise APIError(400, "'seed' must be an integer", param="seed")
    n = number(body, "n", 1, 1, MAX_N, integer=True)
    params = SamplingParams(max_tokens=max_tokens, temperature=number(body, "temperature", 1.0, 0, 2),
                            top_p=number(body, "top_p", 1.0, 0, 1), seed=seed, stop=stops(body), stop_tokens=stop_tokens)
    if params.top_p == 0:
        raise APIError(400, "'top_p' must be above 0", param="top_p")
    return params, n


def messages(body: dict) -> list[dict]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise APIError(400, "'messages' must be a non-empty list of {role, content} objects", param="messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "tool", "developer"):
            raise APIError(400, f"messages[{i}] needs a role: system, user, assistant or tool", param=f"messages[{i}].role")
        content = m.get("content")
        if isinstance(content, list):  # the content-parts form: keep the text parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if content is not None and not isinstance(content, str):
            raise APIError(400, f"messages[{i}].content must be a string", param=f"messages[{i}].content")
        msg = {"role": "system" if m["role"] == "developer" else m["role"], "content": content or ""}
        if m["role"] == "assistant" and m.get("tool_calls"):
            msg["tool_calls"] = m["tool_calls"]  # OpenAI's nested form; the chat template checks it
        if m["role"] == "tool" and isinstance(m.get("name"), str):
            msg["name"] = m["name"]
        out.append(msg)
    return out


def offers_tools(body: dict, model: ServedModel) -> bool:
    """Whether the request offers tools (checked); only a model with llmkit's chat template can call them."""
    tools = body.get("tools")
    if tools is None or tools == []:
        return False
    if not isinstance(tools, list) or not all(isinstance(t, dict) and isinstance(t.get("function", {}).get("name"), str) for t in tools):
        raise APIError(400, "'tools' must be a list of {\"type\": \"function\", \"function\": {\"name\": ...}} objects", param="tools")
    if not model.tool_calls:
        raise APIError(400, f"the model '{model.name}' cannot call tools (only llmkit models chat-tuned with tool calls can)", param="tools")
    return True


def tool_message(text: str) -> tuple[dict, str]:
    """(OpenAI assistant message, finish reason) for a reply that may hold llmkit tool-call markup."""
    from llmkit.chat import parse_assistant

    reply = parse_assistant(text)
    if not reply["tool_calls"]:
        return {"role": "assistant", "content": reply["content"]}, "stop"
    calls = [{"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function", "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
             for c in reply["tool_calls"]]
    return {"role": "assistant", "content": reply["content"] or None, "tool_calls": calls}, "tool_calls"
