"""Does a model use its tools well? Held-out arithmetic word problems (the generator of
:mod:`llmkit.finetune.sft_data`, with a seed the training set did not use), each run through
the agent loop twice: with the calculator, and with no tool at all (a call then comes back as
``error: unknown tool``, so the model has to answer by itself). A problem is solved when the
exact result (as the calculator writes it) appears in the final answer as a number of its own.

    report = tool_use_eval(LlmkitToolModel("runs/chat"), n=200)
    report["with_tools"]["accuracy"], report["without_tools"]["accuracy"]
"""

from __future__ import annotations

import re
from collections.abc import Callable

from llmkit.agents.loop import run_agent
from llmkit.agents.tools import calculator

__all__ = ["EVAL_SEED", "arithmetic_tasks", "solved", "tool_use_eval"]

EVAL_SEED = 10_007
"""The held-out seed (training sets are generated with small seeds)."""


def arithmetic_tasks(n: int, seed: int = EVAL_SEED, kinds=None) -> list[dict]:
    """``[{"question", "expression", "answer"}]``: generated word problems and their exact
    results; ``kinds`` as :func:`llmkit.finetune.sft_data.arithmetic_conversations` takes
    them (default all)."""
    from llmkit.finetune.calculator import evaluate, format_number
    from llmkit.finetune.sft_data import PROBLEM_KINDS, arithmetic_conversations

    tasks = []
    for conv in arithmetic_conversations(n, seed=seed, kinds=PROBLEM_KINDS if kinds is None else kinds):
        user = next(m for m in conv if m["role"] == "user")
        call = next(m for m in conv if m.get("tool_calls"))["tool_calls"][0]
        expr = call["arguments"]["expression"]
        tasks.append({"question": user["content"], "expression": expr, "answer": format_number(evaluate(expr))})
    return tasks


def solved(answer: str, expected: str) -> bool:
    """``expected`` appears in ``answer`` as a whole number (not inside a longer one)."""
    return re.search(rf"(?<![\d.]){re.escape(expected)}(?![\d]|\.\d)", answer) is not None


def tool_use_eval(model, n: int = 100, *, seed: int = EVAL_SEED, kinds=None, max_steps: int = 3, system: str | None = None,
                  log: Callable[[str], None] = lambda s: None) -> dict:
    """Accuracy with and without the calculator on ``n`` held-out problems (of ``kinds``,
    default all), tool calls and errors counted, and a few transcripts."""
    tasks = arithmetic_tasks(n, seed, kinds)
    out: dict = {"problems": n, "seed": seed}
    for name, tools in (("with_tools", [calculator]), ("without_tools", [])):
        right = calls = errors = answered = 0
        examples = []
        for i, t in enumerate(tasks):
            r = run_agent(t["question"], model, tools, max_steps=max_steps, system=system)
            ok = r.stopped == "answer" and solved(r.answer, t["answer"])
            right += ok
            answered += r.stopped == "answer"
            calls += r.tool_calls
            errors += r.errors
            if len(examples) < 3:
                examples.append({"question": t["question"], "expected": t["answer"], "answer": r.answer, "solved": ok, "transcript": r.transcript()})
            if (i + 1) % 25 == 0:
                log(f"{name}: {i + 1}/{n}, {right} solved")
        out[name] = {"accuracy": right / n, "answered": answered / n, "tool_calls": calls, "tool_errors": errors, "examples": examples}
    return out
