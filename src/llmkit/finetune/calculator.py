"""A safe calculator: arithmetic expressions evaluated from their syntax tree, never ``eval``.

``evaluate("12 * 7 + 3") == 87``. The grammar is Python's own arithmetic, restricted to
number literals, ``+ - * / // % **``, unary ``+``/``-`` and parentheses, so results are
exactly what Python computes for the same text (tests hold it to that). Everything else
(names, calls, attribute access, strings, comparisons...) is a ValueError, as are results
that are not finite real numbers and work that could run away: the expression length, the
size of a power and the size of any integer are bounded.

This is the calculator tool of the generated chat data (:mod:`llmkit.finetune.sft_data`),
of ``llmkit chat`` and of the agents: :func:`calculator_tool` is its tool form and
:func:`format_number` the one way its results are written as text.
"""

from __future__ import annotations

import ast
import math
import operator

MAX_EXPRESSION_CHARS = 200
"""Longer expressions are refused before parsing."""
MAX_EXPONENT = 1000
"""Largest ``|b|`` allowed in ``a ** b``."""
MAX_INT_BITS = 256
"""Integers (operands and results) may have at most this many bits (about 77 digits)."""

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}


def evaluate(expr: str) -> int | float:
    """The value of the arithmetic expression ``expr``; ValueError (one line) for anything
    that is not plain arithmetic or whose result is not a finite, bounded real number."""
    if not isinstance(expr, str):
        raise ValueError(f"the expression must be a string, got {type(expr).__name__}")
    if not expr.strip():
        raise ValueError("the expression is empty")
    if len(expr) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"not an arithmetic expression: {expr!r} ({e.msg})") from None
    return _eval(tree.body)


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"only numbers are allowed, not {v!r}")
        return _checked(v)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_eval(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        a, b = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(a, b)
        try:
            return _checked(_BINARY[type(node.op)](a, b))
        except ZeroDivisionError:
            raise ValueError("division by zero") from None
        except OverflowError:
            raise ValueError("the result is too large") from None
    raise ValueError(f"not allowed in a calculation: {_describe(node)}")


def _check_power(base: int | float, exp: int | float) -> None:
    """Refuse powers that would take long or make a huge number before computing them."""
    if abs(exp) > MAX_EXPONENT:
        raise ValueError(f"the exponent {exp} is too large (at most {MAX_EXPONENT} in size)")
    if isinstance(base, int) and isinstance(exp, int) and exp > 0 and abs(base) > 1:
        if (abs(base).bit_length() - 1) * exp > MAX_INT_BITS:  # base ** exp >= 2 ** this
            raise ValueError("the result is too large")


def _checked(v) -> int | float:
    if isinstance(v, complex):
        raise ValueError("the result is not a real number")
    if isinstance(v, int) and v.bit_length() > MAX_INT_BITS:
        raise ValueError("the result is too large")
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError("the result is not a finite number")
    return v


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return f"the name {node.id!r}"
    if isinstance(node, ast.Call):
        return "a function call"
    if isinstance(node, ast.Attribute):
        return "attribute access"
    if isinstance(node, (ast.BinOp, ast.UnaryOp)):
        return f"the operator {type(node.op).__name__}"
    if isinstance(node, (ast.Compare, ast.BoolOp)):
        return "comparisons and logic"
    return f"a {type(node).__name__} expression"


def format_number(value: int | float) -> str:
    """A calculator's display: integers as they are, floats to 10 significant digits with
    no trailing zeros (``0.1 + 0.2`` shows ``0.3``, ``68.0`` shows ``68``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.10g}"


def calculator_tool(arguments: dict) -> str:
    """The tool form: ``{"expression": "2 + 3"}`` -> ``"5"``; ValueError on bad arguments."""
    if not isinstance(arguments, dict) or not isinstance(arguments.get("expression"), str):
        raise ValueError('the calculator takes {"expression": "<arithmetic>"}')
    return format_number(evaluate(arguments["expression"]))


__all__ = ["MAX_EXPONENT", "MAX_EXPRESSION_CHARS", "MAX_INT_BITS", "calculator_tool", "evaluate", "format_number"]
