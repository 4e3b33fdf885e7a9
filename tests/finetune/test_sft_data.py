"""The calculator, the generated chat data set and JSONL conversation files."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmkit.finetune.calculator import MAX_EXPRESSION_CHARS, calculator_tool, evaluate, format_number
from llmkit.chat import normalize_messages
from llmkit.finetune.sft_data import (
    LARGE_NUMBER_KINDS,
    PROBLEM_KINDS,
    arithmetic_conversations,
    default_sft_dataset,
    documented_functions,
    load_conversations,
    pydocs_qa_conversations,
    save_conversations,
)

# -- the calculator, against Python's own arithmetic ---------------------------------

_numbers = st.one_of(
    st.integers(-1000, 1000).map(str),
    # no subnormals or tiny magnitudes: dividing by one overflows to inf inside an expression, which the
    # calculator refuses (see the test below) while Python's eval can hide it again (inf ** 0 == 1.0)
    st.floats(-1000, 1000, allow_nan=False, allow_infinity=False).filter(lambda x: x == 0 or abs(x) >= 1e-6).map(repr),
)


@st.composite
def expressions(draw, depth: int = 3) -> str:
    """Random arithmetic with + - * / // % **, unary minus and parentheses. Exponents are
    small integers so results stay inside the calculator's bounds."""
    if depth == 0 or draw(st.booleans()):
        return draw(_numbers)
    kind = draw(st.sampled_from(["bin", "bin", "neg", "pow", "paren"]))
    if kind == "neg":
        return f"-{draw(expressions(depth - 1))}"
    if kind == "paren":
        return f"({draw(expressions(depth - 1))})"
    if kind == "pow":
        return f"({draw(expressions(depth - 1))}) ** {draw(st.integers(-3, 3))}"
    op = draw(st.sampled_from(["+", "-", "*", "/", "//", "%"]))
    return f"{draw(expressions(depth - 1))} {op} {draw(expressions(depth - 1))}"


def _python(expr: str):
    try:
        value = eval(compile(expr, "<test>", "eval"), {"__builtins__": {}}, {})  # noqa: S307 - the reference
    except (ZeroDivisionError, OverflowError):
        return None
    if isinstance(value, complex) or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


def test_a_non_finite_intermediate_is_refused_even_when_python_hides_it():
    assert eval("((0) ** 0 / -2.2250738585e-313) ** 0") == 1.0  # noqa: S307  (Python: -inf, then ** 0)
    with pytest.raises(ValueError, match="not a finite number"):
        evaluate("((0) ** 0 / -2.2250738585e-313) ** 0")
    with pytest.raises(ValueError, match="not a finite number"):
        evaluate("(1e308 * 10) ** 0")


@settings(max_examples=400, deadline=None)
@given(expressions())
def test_calculator_agrees_with_python(expr):
    expected = _python(expr)
    if expected is None or len(expr) > MAX_EXPRESSION_CHARS:
        with pytest.raises(ValueError):
            evaluate(expr)
    else:
        got = evaluate(expr)
        assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    "expr, message",
    [
        ("x + 1", "the name 'x'"),
        ("__import__('os')", "function call"),
        ("abs(-3)", "function call"),
        ("(1).real", "attribute access"),
        ("().__class__", "attribute access"),
        ("'a' * 3", "only numbers"),
        ("True + 1", "only numbers"),
        ("1 < 2", "comparisons"),
        ("1 << 3", "operator LShift"),
        ("[1, 2]", "List"),
        ("9 ** 9 ** 9", "exponent"),
        ("2 ** 10000", "exponent"),
        ("10 ** 999", "too large"),
        ("(10 ** 50) * (10 ** 50)", "too large"),
        ("1e308 * 10", "finite"),
        ("(-8) ** 0.5", "real number"),
        ("1 / 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("1 +", "not an arithmetic expression"),
        ("", "empty"),
        ("1 + " * 100 + "1", "longer than"),
    ],
)
def test_calculator_refuses_everything_but_bounded_arithmetic(expr, message):
    with pytest.raises(ValueError, match=message) as e:
        evaluate(expr)
    assert "\n" not in str(e.value)


def test_format_number_and_the_tool_form():
    assert [format_number(v) for v in (87, -5, 68.0, 0.1 + 0.2, 2.5, 1 / 3)] == ["87", "-5", "68", "0.3", "2.5", "0.3333333333"]
    assert calculator_tool({"expression": "12 * 7 + 3"}) == "87"
    with pytest.raises(ValueError, match="expression"):
        calculator_tool({"expr": "1"})


# -- generated conversations -----------------------------------------------------------


def test_arithmetic_data_is_deterministic_per_seed():
    a, b, c = arithmetic_conversations(50, seed=1), arithmetic_conversations(50, seed=1), arithmetic_conversations(50, seed=2)
    assert a == b and a != c
    assert arithmetic_conversations(10, seed=1) == a[:10]


def test_arithmetic_conversations_call_the_calculator_and_state_its_result():
    convs = arithmetic_conversations(300, seed=0)
    kinds_seen = set()
    for conv in convs:
        assert normalize_messages(conv) == conv  # already canonical
        user, call, tool, answer = conv[-4:]
        assert [m["role"] for m in conv[-4:]] == ["user", "assistant", "tool", "assistant"]
        (tc,) = call["tool_calls"]
        assert tc["name"] == "calculator" and call["content"] == ""
        expr = tc["arguments"]["expression"]
        assert tool["content"] == format_number(evaluate(expr))
        assert re.search(rf"(?<![\d.]){re.escape(tool['content'])}(?![\d])", answer["content"]), (expr, answer)
        kinds_seen.add(re.sub(r"[\d.$-]+", "#", user["content"])[:25])
    assert any("." in c[-2]["content"] for c in convs) and any(c[-2]["content"].startswith("-") for c in convs)  # decimals, negatives
    assert len(kinds_seen) >= len(PROBLEM_KINDS)
    assert 0.3 < sum(c[0]["role"] == "system" for c in convs) / len(convs) < 0.7


def test_large_number_problems_have_3_or_4_digit_operands():
    convs = arithmetic_conversations(400, seed=5, kinds=LARGE_NUMBER_KINDS)
    sizes, kinds_seen = set(), set()
    for conv in convs:
        user, call, tool, answer = conv[-4:]
        expr = call["tool_calls"][0]["arguments"]["expression"]
        operands = re.findall(r"\d+", expr)
        assert len(operands) == 2 and all(3 <= len(x) <= 4 for x in operands), expr
        assert all(x in user["content"] for x in operands)  # every operand is copied from the question
        assert tool["content"] == format_number(evaluate(expr)) and tool["content"] in answer["content"]
        sizes.update(len(x) for x in operands)
        kinds_seen.add(re.sub(r"\d+", "#", user["content"])[:20])
    assert sizes == {3, 4} and len(kinds_seen) >= len(LARGE_NUMBER_KINDS)
    assert set(LARGE_NUMBER_KINDS) <= set(PROBLEM_KINDS)
    with pytest.raises(ValueError, match="no problem kinds"):
        arithmetic_conversations(3, kinds=())


@pytest.fixture(scope="module")
def functions():
    return documented_functions()


# Run in a fresh interpreter: libraries imported by other tests patch stdlib functions
# (something replaces inspect.getfile), which would hide the docstrings the corpus holds.
_DOC_CHECK = """
import importlib, inspect, json, sys
bad = []
for qualname, answer in json.load(sys.stdin):
    module, _, name = qualname.rpartition(".")
    obj = getattr(importlib.import_module(module or "builtins"), name)
    doc = " ".join((inspect.getdoc(obj) or "").split())
    if not callable(obj) or not doc.startswith(answer):
        bad.append([qualname, answer, doc[:100]])
print(json.dumps(bad))
"""


def test_qa_pairs_name_real_functions_whose_docstring_starts_with_the_answer(functions):
    assert len(functions) > 500 and any(f.qualname == "json.dumps" for f in functions)
    convs = pydocs_qa_conversations(200, seed=0)
    assert convs == pydocs_qa_conversations(200, seed=0) and convs != pydocs_qa_conversations(200, seed=1)
    pairs = []
    for question, answer in convs:
        assert (question["role"], answer["role"]) == ("user", "assistant")
        pairs.append((re.search(r"`([\w.]+)`", question["content"]).group(1), answer["content"]))
        assert 12 <= len(answer["content"]) <= 240 and "->" not in answer["content"]
    assert len({q for q, _ in pairs}) == 200  # distinct functions
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", _DOC_CHECK], input=json.dumps(pairs), capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout) == []


def test_qa_pairs_from_a_given_corpus():
    from llmkit.data.documents import Corpus, Document

    text = "NAME\n    m\n\nFUNCTIONS\n    f(x)\n        Return x doubled. More text.\n    \n    _p()\n        Private.\n\nDATA\n"
    convs = pydocs_qa_conversations(1, corpus=Corpus("c", [Document("m", text)]))
    assert convs[0][1]["content"] == "Return x doubled." and "`m.f`" in convs[0][0]["content"]
    with pytest.raises(ValueError, match="only 1 usable"):
        pydocs_qa_conversations(2, corpus=Corpus("c", [Document("m", text)]))


def test_default_dataset_mixes_both_deterministically():
    a = default_sft_dataset(n_arith=40, n_qa=20, seed=3)
    assert a == default_sft_dataset(n_arith=40, n_qa=20, seed=3) and a != default_sft_dataset(n_arith=40, n_qa=20, seed=4)
    tool_users = [c for c in a if any(m["role"] == "tool" for m in c)]
    assert len(a) == 60 and len(tool_users) == 40
    assert tool_users != a[:40]  # shuffled together
    with pytest.raises(ValueError, match=">= 0"):
        default_sft_dataset(n_arith=-1)


# -- JSONL files -----------------------------------------------------------------------


def test_jsonl_round_trip_and_refusal_to_overwrite(tmp_path):
    convs = default_sft_dataset(n_arith=10, n_qa=5, seed=0)
    path = save_conversations(tmp_path / "d.jsonl", convs)
    assert load_conversations(path) == convs
    assert all(list(json.loads(line)) == ["messages"] for line in path.read_text().splitlines())
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_conversations(path, convs[:1])
    save_conversations(path, convs[:1], overwrite=True)
    assert load_conversations(path) == convs[:1]


def test_jsonl_accepts_bare_lists_blank_lines_and_openai_shapes(tmp_path):
    p = tmp_path / "d.jsonl"
    nested = {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "calculator", "arguments": '{"expression": "1+1"}'}}]}
    p.write_text(json.dumps([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]) + "\n\n"
                 + json.dumps({"messages": [{"role": "user", "content": "1+1?"}, nested, {"role": "tool", "content": "2"}]}) + "\n")
    a, b = load_conversations(p)
    assert a[1]["content"] == "hello" and b[1]["tool_calls"] == [{"name": "calculator", "arguments": {"expression": "1+1"}}]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"messages": [{"role": "user", "content": "x"}]}\n{not json\n', "line 2 is not JSON"),
        ('{"messages": [{"role": "user", "content": "x"}]}\n{"text": "x"}\n', 'line 2: expected {"messages"'),
        ('\n[{"role": "user", "content": 5}]\n', "line 2: message 0 (user): content must be a string"),
        ('[{"role": "wizard", "content": "x"}]\n', "line 1: message 0: unknown role"),
        ("\n\n", "holds no conversations"),
    ],
)
def test_jsonl_errors_name_the_file_and_line(tmp_path, content, message):
    p = tmp_path / "bad.jsonl"
    p.write_text(content)
    with pytest.raises(ValueError, match=re.escape(message)) as e:
        load_conversations(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_saving_an_invalid_conversation_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="conversation 1: message 0"):
        save_conversations(tmp_path / "x.jsonl", [[{"role": "user", "content": "ok"}], [{"role": "user"}]])
    assert not (tmp_path / "x.jsonl").exists()
