"""The chat template: conversations (OpenAI's message shape) to token ids with a loss mask.

A conversation is a list of messages ``{"role": "system"|"user"|"assistant"|"tool",
"content": str}``. An assistant message may carry ``"tool_calls": [{"name": str,
"arguments": dict}]`` (OpenAI's nested ``{"type": "function", "function": {"name": ...,
"arguments": "<json>"}}`` form is accepted and normalised), a tool message a ``"name"``.

Each turn is a role header, the content and ``<|end|>``; turns are separated by a newline.
Tool calls are JSON between ``<|tool_call|>`` and ``<|/tool_call|>`` after the assistant's
content. A tool message's ``name`` is not rendered: results follow their calls in order
(as in Llama 3 and Qwen templates)::

    <|system|>Use the calculator for arithmetic.<|end|>
    <|user|>What is 12 * 7 + 3?<|end|>
    <|assistant|><|tool_call|>{"name": "calculator", "arguments": {"expression": "12 * 7 + 3"}}<|/tool_call|><|end|>
    <|tool|>87<|end|>
    <|assistant|>12 * 7 + 3 is 87.<|end|>

The markers are special tokens with ids of their own (:data:`CHAT_SPECIAL_TOKENS`,
:func:`ensure_chat_tokens`); message text is encoded with ``encode_ordinary``, so a user who
types ``<|end|>`` gets ordinary text, never the marker. The loss mask is 1 on what the
model must learn to write (assistant content, tool-call markup, the assistant's ``<|end|>``,
so it learns to stop) and 0 on the rest (headers, system/user/tool text, separators).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from llmkit.tokenizer import Tokenizer

SYSTEM, USER, ASSISTANT, TOOL = "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>"
END = "<|end|>"
"""Ends every turn; generation stops at it."""
TOOL_CALL, TOOL_CALL_END = "<|tool_call|>", "<|/tool_call|>"
ROLE_TOKENS: dict[str, str] = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT, "tool": TOOL}
CHAT_SPECIAL_TOKENS: tuple[str, ...] = (SYSTEM, USER, ASSISTANT, TOOL, END, TOOL_CALL, TOOL_CALL_END)
TURN_SEPARATOR = "\n"
TEMPLATE_NAME = "llmkit-chat-v1"
IGNORE_INDEX = -100
"""Target of positions that carry no loss (``per_token_cross_entropy``'s ignore index)."""

Message = dict
Conversation = list[Message]
Tool = Callable[[dict], str]


def has_chat_tokens(tok: Tokenizer) -> bool:
    """Whether ``tok`` has every chat special token (a chat-tuned model's tokenizer does)."""
    return all(t in tok.special_tokens for t in CHAT_SPECIAL_TOKENS)


def ensure_chat_tokens(tok: Tokenizer) -> Tokenizer:
    """``tok`` itself when it has the chat tokens, else a copy with the missing ones added
    after its last id (the model's embedding must then grow to ``n_vocab``)."""
    return tok if has_chat_tokens(tok) else tok.add_special_tokens(CHAT_SPECIAL_TOKENS)


# -- validation ------------------------------------------------------------------------


def normalize_messages(messages: Sequence[Mapping]) -> Conversation:
    """Validated copies of ``messages`` in the canonical shape: ``role``, ``content`` (str),
    ``tool_calls`` (``[{"name", "arguments": dict}]``, only when there are some) and a tool
    message's ``name``. Unknown keys (``tool_call_id``...) are dropped. One-line ValueError
    naming the message for anything malformed."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence) or not messages:
        raise ValueError("a conversation must be a non-empty list of messages")
    out: Conversation = []
    open_calls = 0  # tool results still expected for the last assistant's calls
    for i, m in enumerate(messages):
        msg = _normalize_message(i, m)
        if msg["role"] == "system" and i > 0:
            raise ValueError(f"message {i}: a system message may only come first")
        if msg["role"] == "tool":
            if open_calls == 0:
                raise ValueError(f"message {i}: a tool message must follow an assistant tool call (one result per call)")
            open_calls -= 1
        else:
            open_calls = len(msg.get("tool_calls", ()))
        out.append(msg)
    return out


def _normalize_message(i: int, m) -> Message:
    if not isinstance(m, Mapping):
        raise ValueError(f"message {i} is not an object (got {type(m).__name__})")
    role = m.get("role")
    if role not in ROLE_TOKENS:
        raise ValueError(f"message {i}: unknown role {role!r} (use system, user, assistant or tool)")
    raw_calls = m.get("tool_calls") or []
    if raw_calls and role != "assistant":
        raise ValueError(f"message {i}: only assistant messages may carry tool_calls")
    if not isinstance(raw_calls, list):
        raise ValueError(f"message {i}: tool_calls must be a list")
    calls = [_normalize_call(i, j, c) for j, c in enumerate(raw_calls)]
    if "content" not in m and not calls:
        raise ValueError(f"message {i} ({role}) has no content")
    content = _content_text(i, role, m.get("content"), bool(calls))
    msg: Message = {"role": role, "content": content}
    if calls:
        msg["tool_calls"] = calls
    if role == "tool" and m.get("name") is not None:
        if not isinstance(m["name"], str):
            raise ValueError(f"message {i}: a tool message's name must be a string")
        msg["name"] = m["name"]
    return msg


def _content_text(i: int, role: str, content, has_calls: bool) -> str:
    """A string; OpenAI's ``[{"type": "text", "text": ...}]`` parts are joined, and None is
    allowed (as "") beside tool calls."""
    if content is None and has_calls:
        return ""
    if isinstance(content, list) and all(isinstance(p, Mapping) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise ValueError(f"message {i} ({role}): content must be a string, got {type(content).__name__}")
    return content


def _normalize_call(i: int, j: int, call) -> dict:
    where = f"message {i} tool call {j}"
    if not isinstance(call, Mapping):
        raise ValueError(f"{where} is not an object")
    spec = call.get("function", call)  # OpenAI nests {"type": "function", "function": {...}}
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: 'function' must be an object")
    name, args = spec.get("name"), spec.get("arguments", {})
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where} has no name")
    if isinstance(args, str):  # OpenAI sends arguments as a JSON string
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            raise ValueError(f"{where}: arguments are not valid JSON") from None
    if not isinstance(args, dict):
        raise ValueError(f"{where}: arguments must be a JSON object, got {type(args).__name__}")
    try:
        json.dumps(args)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: arguments are not JSON-serialisable") from None
    return {"name": name, "arguments": args}


def tool_call_json(call: Mapping) -> str:
    """The text between the tool-call markers: ``{"name": ..., "arguments": {...}}``."""
    return json.dumps({"name": call["name"], "arguments": call["arguments"]}, ensure_ascii=False)


# -- rendering -------------------------------------------------------------------------


class _Piece(NamedTuple):
    text: str
    special: bool  # one special-token id, not text
    trained: bool  # in the loss mask


def _pieces(messages: Conversation) -> list[_Piece]:
    """The conversation (already normalised) as a flat list of text and special pieces."""
    out: list[_Piece] = []
    for m in messages:
        trained = m["role"] == "assistant"
        out.append(_Piece(ROLE_TOKENS[m["role"]], True, False))
        if m["content"]:
            out.append(_Piece(m["content"], False, trained))
        for call in m.get("tool_calls", ()):
            out += [_Piece(TOOL_CALL, True, trained), _Piece(tool_call_json(call), False, trained), _Piece(TOOL_CALL_END, True, trained)]
        out += [_Piece(END, True, trained), _Piece(TURN_SEPARATOR, False, False)]
    return out


class ChatTemplate:
    """Render and encode conversations for a tokenizer that has :data:`CHAT_SPECIAL_TOKENS`."""

    def __init__(self, tokenizer: Tokenizer):
        missing = [t for t in CHAT_SPECIAL_TOKENS if t not in tokenizer.special_tokens]
        if missing:
            raise ValueError(f"the tokenizer lacks the chat tokens {', '.join(missing)}; use ensure_chat_tokens(tokenizer) first")
        self.tokenizer = tokenizer
        self.ids: dict[str, int] = {t: tokenizer.special_tokens[t] for t in CHAT_SPECIAL_TOKENS}

    @property
    def end_id(self) -> int:
        return self.ids[END]

    @property
    def stop_ids(self) -> set[int]:
        """Where a generated reply ends: ``<|end|>``, or a model that starts another turn
        (a role header) or a new document (``<|endoftext|>``)."""
        stops = {self.end_id, *(self.ids[t] for t in ROLE_TOKENS.values())}
        return stops | ({self.tokenizer.eot_token} if self.tokenizer.eot_token is not None else set())

    def render(self, messages: Sequence[Mapping]) -> str:
        """The conversation as text (special tokens spelled out); ``decode(encode(m)[0])``."""
        return "".join(p.text for p in _pieces(normalize_messages(messages)))

    def encode(self, messages: Sequence[Mapping]) -> tuple[list[int], list[int]]:
        """``(ids, loss_mask)``: mask 1 on assistant content, tool-call markup and the
        assistant's ``<|end|>``; 0 on headers, separators and system/user/tool text."""
        ids: list[int] = []
        mask: list[int] = []
        for p in _pieces(normalize_messages(messages)):
            part = [self.ids[p.text]] if p.special else self.tokenizer.encode_ordinary(p.text)
            ids += part
            mask += [int(p.trained)] * len(part)
        return ids, mask

    def prompt_ids(self, messages: Sequence[Mapping]) -> list[int]:
        """The conversation followed by the ``<|assistant|>`` header: what the model
        continues to write the next reply (ending at ``<|end|>``)."""
        return self.encode(messages)[0] + [self.ids[ASSISTANT]]

    def prompt_text(self, messages: Sequence[Mapping]) -> str:
        """:meth:`prompt_ids` as text."""
        return self.render(messages) + ASSISTANT

    def to_training_example(self, messages: Sequence[Mapping], max_len: int) -> tuple[list[int], list[int]]:
        """``(input_ids, targets)`` for a causal LM: ``targets[t]`` is the token after
        ``input_ids[t]`` where that token is in the loss mask, else -100. Conversations
        longer than ``max_len`` + 1 tokens are truncated, keeping the beginning (so a long
        conversation loses its last turns, never its start)."""
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        ids, mask = self.encode(messages)
        ids, mask = ids[: max_len + 1], mask[: max_len + 1]
        targets = [t if m else IGNORE_INDEX for t, m in zip(ids[1:], mask[1:])]
        return ids[:-1], targets

    def describe(self) -> dict:
        """What a run directory records about the template (``chat_template.json``)."""
        example = [{"role": "user", "content": "What is 2 + 3?"},
                   {"role": "assistant", "content": "", "tool_calls": [{"name": "calculator", "arguments": {"expression": "2 + 3"}}]},
                   {"role": "tool", "name": "calculator", "content": "5"}, {"role": "assistant", "content": "2 + 3 is 5."}]
        return {"format": "llmkit-chat", "template": TEMPLATE_NAME, "special_tokens": dict(self.ids),
                "turn_separator": TURN_SEPARATOR, "example": self.render(example)}


# -- parsing replies -------------------------------------------------------------------

_CALL = re.compile(re.escape(TOOL_CALL) + r"(.*?)" + re.escape(TOOL_CALL_END), re.DOTALL)


def parse_assistant(text: str) -> Message:
    """A generated reply (the text after ``<|assistant|>``, up to ``<|end|>``) as an
    assistant message ``{"role", "content", "tool_calls"}``. Well-formed tool calls are
    taken out of the text; a malformed one (bad JSON, no name, unclosed) stays in the
    content as plain text. The content is stripped of surrounding whitespace."""
    text = text.split(END, 1)[0]
    calls: list[dict] = []

    def take(m: re.Match) -> str:
        call = _parse_call(m.group(1))
        if call is None:
            return m.group(0)
        calls.append(call)
        return ""

    return {"role": "assistant", "content": _CALL.sub(take, text).strip(), "tool_calls": calls}


def _parse_call(body: str) -> dict | None:
    try:
        obj = json.loads(body)
        return _normalize_call(0, 0, obj) if isinstance(obj, dict) else None
    except ValueError:  # json.JSONDecodeError is one
        return None


# -- generating with the template ------------------------------------------------------


def run_tool(tools: Mapping[str, Tool], call: Mapping) -> str:
    """The tool's result as text; an unknown tool or bad arguments give ``error: ...``
    (one line), which the model sees as the tool's answer."""
    fn = tools.get(call["name"])
    if fn is None:
        return f"error: unknown tool {call['name']!r}"
    try:
        return str(fn(call["arguments"]))
    except (ValueError, TypeError, KeyError) as e:
        return f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}"


def chat_turns(
    model, template: ChatTemplate, messages: Sequence[Mapping], *, tools: Mapping[str, Tool] | None = None,
    max_new_tokens: int = 128, max_tool_calls: int = 4, **sampling,
) -> Conversation:
    """The messages the assistant adds after ``messages``: its reply, and when the reply
    calls tools, the calls, their results (run from ``tools``) and a new reply, up to
    ``max_tool_calls`` rounds (then the last calls are left unanswered). ``sampling``:
    temperature, top_k, top_p, seed (see :func:`llmkit.generation.iter_tokens`)."""
    from llmkit.generation import generate

    history = normalize_messages(messages)
    new: Conversation = []
    for round_ in range(max_tool_calls + 1):
        ids = generate(model, template.prompt_ids(history + new), max_new_tokens, stop_tokens=template.stop_ids, **sampling)
        reply = parse_assistant(template.tokenizer.decode(ids))
        calls = reply.pop("tool_calls")
        new.append({**reply, "tool_calls": calls} if calls else reply)
        if not calls or round_ == max_tool_calls:
            return new
        new += [{"role": "tool", "name": c["name"], "content": run_tool(tools or {}, c)} for c in calls]
    return new


__all__ = [
    "ASSISTANT", "CHAT_SPECIAL_TOKENS", "END", "IGNORE_INDEX", "ROLE_TOKENS", "SYSTEM", "TEMPLATE_NAME", "TOOL",
    "TOOL_CALL", "TOOL_CALL_END", "TURN_SEPARATOR", "USER", "ChatTemplate", "Conversation", "Message", "chat_turns",
    "ensure_chat_tokens", "has_chat_tokens", "normalize_messages", "parse_assistant", "run_tool", "tool_call_json",
]
