"""The tool-use evaluation, with scripted models whose skill is known: one that always calls the
calculator with the right expression, and one that can only guess."""

from __future__ import annotations

import json
import re

import pytest

from llmkit.agents.evaluate import arithmetic_tasks, solved, tool_use_eval
from llmkit.finetune.calculator import evaluate, format_number


class Diligent:
    """Calls the calculator with the problem's expression when it can; answers with the result."""

    def __init__(self, tasks):
        self.expr = {t["question"]: t["expression"] for t in tasks}

    def step(self, messages, schemas):
        question = next(m["content"] for m in messages if m["role"] == "user")
        last = messages[-1]
        if last["role"] == "tool":
            if last["content"].startswith("error:"):
                return {"content": "I think it is 12."}
            return {"content": f"The answer is {last['content']}."}
        return {"content": "", "tool_calls": [{"id": "1", "name": "calculator", "arguments": json.dumps({"expression": self.expr[question]})}]}


def test_tasks_are_held_out_and_exact():
    tasks = arithmetic_tasks(20)
    assert len({t["question"] for t in tasks}) > 15
    assert all(t["answer"] == format_number(evaluate(t["expression"])) for t in tasks)


def test_tasks_of_chosen_kinds():
    from llmkit.finetune.sft_data import LARGE_NUMBER_KINDS

    tasks = arithmetic_tasks(40, kinds=LARGE_NUMBER_KINDS)
    assert all(3 <= len(x) <= 4 for t in tasks for x in re.findall(r"\d+", t["expression"]))
    assert arithmetic_tasks(40) != tasks
    with pytest.raises(ValueError, match="no problem kinds"):
        arithmetic_tasks(3, kinds=())


def test_solved_matches_whole_numbers_only():
    assert solved("There are 768 bacteria.", "768") and solved("It costs 9.5 dollars.", "9.5")
    assert not solved("There are 1768 bacteria.", "768") and not solved("9.55 dollars", "9.5") and not solved("7680", "768")


def test_with_and_without_tools():
    tasks = arithmetic_tasks(30)
    report = tool_use_eval(Diligent(tasks), n=30)
    w, wo = report["with_tools"], report["without_tools"]
    assert w["accuracy"] == 1.0 and w["tool_calls"] == 30 and w["tool_errors"] == 0
    assert wo["tool_errors"] == 30 and wo["accuracy"] == sum(t["answer"] == "12" for t in tasks) / 30
    assert "calculator ->" in w["examples"][0]["transcript"]
