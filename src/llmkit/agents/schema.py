"""Tools are plain typed Python functions; their OpenAI function schema comes from the
signature and the docstring:

    def calculator(expression: str) -> str:
        \"\"\"Evaluate an arithmetic expression exactly.

        Args:
            expression: Python arithmetic, e.g. "12 * (7 + 3)".
        \"\"\"

    tool_schema(calculator)
    # {"type": "function", "function": {"name": "calculator", "description": "Evaluate an arithmetic expression exactly.",
    #   "parameters": {"type": "object", "properties": {"expression": {"type": "string", "description": "Python arithmetic, ..."}},
    #                  "required": ["expression"], "additionalProperties": false}}}

:func:`call_tool` runs a call the way a model makes it (JSON arguments, possibly malformed)
and always returns text: the result, or ``error: ...`` that the model can read and act on.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Mapping

__all__ = ["call_tool", "parse_docstring", "tool_schema"]

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(description, {parameter: description}) from a Google-style docstring (``Args:`` section)."""
    doc = inspect.cleandoc(doc or "")
    parts = re.split(r"\n\s*(?:Args|Arguments|Parameters):\s*\n", doc, maxsplit=1)
    description = " ".join(parts[0].split("\n\n")[0].split())
    params: dict[str, str] = {}
    if len(parts) == 2:
        current = None
        for line in parts[1].split("\n"):
            m = re.match(r"^\s{0,8}(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
            if m and not line.startswith(" " * 9):
                current = m.group(1)
                params[current] = m.group(2).strip()
            elif re.match(r"^\S", line):  # the next section (Returns:, Raises:) ends the arguments
                break
            elif current and line.strip():
                params[current] = (params[current] + " " + line.strip()).strip()
    return description, params


def _json_type(annotation) -> dict:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation in _JSON_TYPES:
        return {"type": _JSON_TYPES[annotation]}
    if origin in (list, tuple, typing.Sequence) or annotation in (list, tuple):
        return {"type": "array", "items": _json_type(args[0]) if args else {}}
    if origin in (dict, Mapping) or annotation is dict:
        return {"type": "object"}
    if origin is typing.Literal:
        return {"type": _JSON_TYPES.get(type(args[0]), "string"), "enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _json_type(inner[0])
    raise TypeError(f"no JSON schema type for the annotation {annotation!r}")


def tool_schema(fn: Callable) -> dict:
    """The OpenAI ``tools`` entry of ``fn``: every parameter needs a type annotation; those
    without a default are required."""
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    description, param_docs = parse_docstring(fn.__doc__)
    props, required = {}, []
    for name, p in sig.parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"{fn.__name__}: a tool takes named parameters, not *{name}")
        if name not in hints:
            raise TypeError(f"{fn.__name__}: parameter {name!r} needs a type annotation")
        prop = _json_type(hints[name])
        if param_docs.get(name):
            prop["description"] = param_docs[name]
        if p.default is p.empty:
            required.append(name)
        elif p.default is not None:
            prop["default"] = p.default
        props[name] = prop
    return {"type": "function", "function": {"name": fn.__name__, "description": description,
            "parameters": {"type": "object", "properties": props, "required": required, "additionalProperties": False}}}


def _check(value, annotation, name: str):
    """``value`` as ``annotation`` wants it (an int is accepted for a float), or TypeError."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check(value, inner[0], name) if len(inner) == 1 else value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in _JSON_TYPES:
        if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
            raise TypeError(f"argument {name!r} must be {_JSON_TYPES[annotation]}, got {json.dumps(value)[:40]}")
        return value
    if origin is typing.Literal and value not in args:
        raise TypeError(f"argument {name!r} must be one of {list(args)}")
    if (origin in (list, tuple) or annotation in (list, tuple)) and not isinstance(value, list):
        raise TypeError(f"argument {name!r} must be an array")
    return value


def call_tool(tools: Mapping[str, Callable], name: str, arguments) -> str:
    """Run ``tools[name]`` with ``arguments`` (a dict, or the JSON text a model wrote). Never
    raises for the model's mistakes or the tool's failures: they come back as ``error: ...``."""
    fn = tools.get(name)
    if fn is None:
        return f"error: unknown tool {name!r}; the tools are: {', '.join(tools) or 'none'}"
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as e:
            return f"error: the arguments are not valid JSON ({e.msg} at column {e.colno})"
    if not isinstance(arguments, dict):
        return "error: the arguments must be a JSON object"
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    unknown = [k for k in arguments if k not in sig.parameters]
    if unknown:
        return f"error: {name} has no argument {unknown[0]!r} (it takes: {', '.join(sig.parameters)})"
    missing = [k for k, p in sig.parameters.items() if p.default is p.empty and k not in arguments]
    if missing:
        return f"error: {name} needs the argument {missing[0]!r}"
    try:
        kwargs = {k: _check(v, hints.get(k, typing.Any), k) for k, v in arguments.items()}
        result = fn(**kwargs)
    except Exception as e:  # a tool's failure is the model's information, not the loop's crash
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"error: {msg}"
    return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)
