"""The agents' tools: schemas from signatures and docstrings, calls the way a model makes them,
and the python sandbox against the issue's attacks.

Outside truths: Python's own arithmetic for the calculator; the host itself for the sandbox
(the files outside it stay untouched, no process is left behind, the host can still allocate)."""

from __future__ import annotations

import json
import os
import time
from typing import Literal, Optional

import pytest

from llmkit.agents.sandbox import run_python
from llmkit.agents.schema import call_tool, parse_docstring, tool_schema
from llmkit.agents.tools import BUILTIN_TOOLS, calculator, configure, make_read_file, python, read_file


def weather(city: str, days: int = 3, unit: Literal["c", "f"] = "c", hourly: Optional[bool] = None) -> str:
    """Forecast the weather.

    Longer text that is not the summary.

    Args:
        city: the city's name,
            in English.
        days: how many days ahead.
        unit: c or f.

    Returns:
        the forecast.
    """
    return f"{city}: sunny for {days} days ({unit})"


def test_schema_from_signature_and_docstring():
    s = tool_schema(weather)["function"]
    assert s["name"] == "weather" and s["description"] == "Forecast the weather."
    props = s["parameters"]["properties"]
    assert props["city"] == {"type": "string", "description": "the city's name, in English."}
    assert props["days"] == {"type": "integer", "description": "how many days ahead.", "default": 3}
    assert props["unit"]["enum"] == ["c", "f"] and props["hourly"] == {"type": "boolean"}
    assert s["parameters"]["required"] == ["city"] and s["parameters"]["additionalProperties"] is False
    assert parse_docstring(None) == ("", {})
    for fn in BUILTIN_TOOLS.values():  # every built-in tool has a complete schema
        f = tool_schema(fn)["function"]
        assert f["description"] and all(p.get("description") for p in f["parameters"]["properties"].values())
    with pytest.raises(TypeError, match="needs a type annotation"):
        tool_schema(lambda x: x)


@pytest.mark.parametrize("arguments, expected", [
    ('{"city": "Paris"}', "Paris: sunny for 3 days (c)"),
    ({"city": "Oslo", "days": 5, "unit": "f"}, "Oslo: sunny for 5 days (f)"),
    ('{"city": "Rome", "days": "two"}', "error: argument 'days' must be integer"),
    ('{"city": "Rome", "unit": "k"}', "error: argument 'unit' must be one of ['c', 'f']"),
    ('{"town": "Rome"}', "error: weather has no argument 'town'"),
    ("{}", "error: weather needs the argument 'city'"),
    ('{"city": ', "error: the arguments are not valid JSON"),
    ("[1, 2]", "error: the arguments must be a JSON object"),
])
def test_calls_never_raise(arguments, expected):
    assert call_tool({"weather": weather}, "weather", arguments).startswith(expected)


def test_unknown_tools_and_failing_tools_come_back_as_errors():
    assert call_tool({"weather": weather}, "teleport", "{}") == "error: unknown tool 'teleport'; the tools are: weather"
    assert call_tool(BUILTIN_TOOLS, "calculator", {"expression": "1 / 0"}).startswith("error: ")
    assert call_tool(BUILTIN_TOOLS, "calculator", {"expression": "__import__('os')"}).startswith("error: ")


@pytest.mark.parametrize("expr", ["1234 * 5678", "(3.5 + 2) / 4", "2 ** 10 - 7 // 2", "-17 % 5", "9999 * 8888 + 7777"])
def test_calculator_is_pythons_arithmetic(expr):
    from llmkit.finetune.calculator import format_number

    assert calculator(expr) == format_number(eval(expr))  # noqa: S307  (the outside truth, on trusted test input)


def test_read_file_is_confined_to_its_root(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "notes.txt").write_text("hello")
    (tmp_path / "secret.txt").write_text("no")
    rf = make_read_file(tmp_path / "root")
    assert rf("notes.txt") == "hello"
    for bad in ("../secret.txt", str(tmp_path / "secret.txt"), "/etc/passwd"):
        with pytest.raises(PermissionError):
            rf(bad)
    os.symlink(tmp_path / "secret.txt", tmp_path / "root" / "link.txt")
    with pytest.raises(PermissionError):
        rf("link.txt")  # a symlink out is still out
    configure(root=tmp_path / "root")
    try:
        assert call_tool(BUILTIN_TOOLS, "read_file", {"path": "notes.txt"}) == "hello"
        assert call_tool(BUILTIN_TOOLS, "read_file", {"path": "missing.txt"}) == "error: missing.txt: no such file"
    finally:
        configure(root=os.getcwd())


def test_python_tool_runs_code_and_reports_errors():
    assert python("print(sum(range(10)))").strip() == "45"
    assert python("x = 1") == "(no output)"
    assert call_tool(BUILTIN_TOOLS, "python", {"code": "print(1/0)"}) == "error: ZeroDivisionError: division by zero"


def _sandbox_processes() -> list[str]:
    """Processes still running a sandbox's code (their command line names the sandbox folder)."""
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "llmkit-sandbox-" in cmd:
            found.append(f"{pid}: {cmd}")
    return found


@pytest.mark.parametrize("name, code, error", [
    ("read outside", "print(open('/etc/passwd').read())", "reading /etc/passwd is outside the sandbox directory"),
    ("list outside", "import os; print(os.listdir('/root'))", "is outside the sandbox directory"),
    ("network", "import socket; socket.create_connection(('127.0.0.1', 9))", "socket"),
    ("infinite loop", "while True: pass", "time limit"),
    ("fork bomb", "import os\nwhile True: os.fork()", "os.fork is not allowed"),
    ("subprocess", "import subprocess; subprocess.run(['sh', '-c', 'echo hi'])", "not allowed"),
    ("10 GB", "x = bytearray(10 * 2**30)", "MemoryError"),
    ("write outside", "open({target!r}, 'w').write('escaped')", "is outside the sandbox directory"),
    ("delete outside", "import os; os.remove({target!r})", "is outside the sandbox directory"),
    ("ctypes", "import ctypes; ctypes.CDLL(None).system(b'touch /tmp/x')", "importing ctypes is not allowed"),
])
def test_sandbox_stops_each_attack_and_the_host_is_unaffected(tmp_path, name, code, error):
    target = tmp_path / "host_file.txt"
    target.write_text("original")
    t0 = time.monotonic()
    r = run_python(code.format(target=str(target)), timeout=2.0, memory_mb=256)
    assert not r.ok and error in r.error(), (name, r.error(), r.stderr[-300:])
    assert time.monotonic() - t0 < 10
    assert target.read_text() == "original"
    assert _sandbox_processes() == []  # nothing it started is left running
    assert len(bytearray(64 * 2**20)) == 64 * 2**20  # the host can still allocate


def test_sandbox_files_stay_inside_and_output_is_bounded(tmp_path):
    r = run_python("open('a.txt', 'w').write('x' * 10)\nimport os\nprint(sorted(os.listdir('.')))\nprint('y' * 50000)", timeout=5, max_output=1000)
    assert r.ok and "['a.txt', 'main.py']" in r.stdout and "more characters" in r.stdout
    r = run_python("print(open('data.txt').read())", workdir=tmp_path / "w", timeout=5)
    assert not r.ok and "No such file" in r.error()
    (tmp_path / "w" / "data.txt").write_text("mine")
    assert run_python("print(open('data.txt').read())", workdir=tmp_path / "w", timeout=5).stdout.strip() == "mine"


def test_schemas_are_json(tmp_path):
    json.dumps([tool_schema(f) for f in BUILTIN_TOOLS.values()])
    assert read_file.__doc__ and calculator.__doc__


def test_rag_search_returns_cited_passages(tmp_path):
    from llmkit.agents.tools import make_rag_search
    from llmkit.rag.index import build_index
    from llmkit.rag.ingest import Document

    docs = [Document("tea", "Tea", "Green tea steeps for two minutes in water at 80 degrees."),
            Document("bikes", "Bicycles", "A bicycle chain needs oil every few hundred kilometres.")]
    build_index(out=tmp_path / "index", documents=docs)
    search = make_rag_search(tmp_path / "index")
    out = search("how long to steep green tea", k=1)
    assert out.startswith("[1] tea (lines 1-1):") and "two minutes" in out
    assert call_tool({"rag_search": search}, "rag_search", {"query": "x", "k": 50}) == "error: k must be between 1 and 10"
    # the plain rag_search tool takes its index, default k and passage length from configure()
    from llmkit.agents import tools

    saved = dict(tools._settings)
    try:
        tools.configure(index=tmp_path / "index", rag_k=1, rag_chars=30)
        out = tools.rag_search("how long to steep green tea")
        assert out.startswith("[1] tea (line 1):\nGreen tea steeps") and out.endswith("...") and "[2]" not in out
        assert len(out.split("\n", 1)[1]) <= 30 and "[2]" in tools.rag_search("green tea", k=2)
    finally:
        tools._settings.clear()
        tools._settings.update(saved)
