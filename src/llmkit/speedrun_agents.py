"""The agents stage of ``llmkit speedrun``: chat-tune the pre-trained GPT into a tool user
(calculator word problems, 3-4 digit ones among them, and rag_search questions about the
standard library; numbers tokenized digit by digit), measure it on held-out 3-4 digit
problems with the calculator and with no tool, ask it about held-out functions through the
RAG index of the previous stage, and show one transcript of each tool."""

from __future__ import annotations

import json
from pathlib import Path


def agent_settings(c) -> dict:
    if c.quick:
        return {"steps": c.quick_agent_steps, "lr": 1.5e-3, "n_arith": 300, "n_large": 200, "n_rag": 60, "eval_problems": 20, "eval_questions": 5}
    return {"steps": c.agent_steps, "lr": 1.5e-3, "n_arith": 4000, "n_large": 6000, "n_rag": 3000, "eval_problems": 200, "eval_questions": 30}


def run_agents(ctx) -> dict:
    from llmkit.agents.data import SNIPPET_CHARS, rag_search_tasks, tool_use_dataset
    from llmkit.agents.evaluate import arithmetic_tasks, solved, tool_use_eval
    from llmkit.agents.loop import LlmkitToolModel, run_agent
    from llmkit.agents.tools import calculator, make_rag_search
    from llmkit.finetune.sft import SFTConfig, train_sft
    from llmkit.finetune.sft_data import LARGE_NUMBER_KINDS
    from llmkit.rag.store import open_store

    s = agent_settings(ctx.config)
    out = ctx.out / "agent"
    convs = tool_use_dataset(s["n_arith"], s["n_large"], s["n_rag"], seed=0)
    ctx.log(f"chat-tuning the pre-trained GPT on {len(convs):,} tool-use conversations ({s['steps']} steps, numbers digit by digit)")
    cfg = SFTConfig(steps=s["steps"], batch_size=16, lr=s["lr"], warmup=30 if s["steps"] > 100 else 5, eval_every=max(1, s["steps"] // 4),
                    log_every=max(1, s["steps"] // 10), device="cpu", split_digits=True)
    sft = train_sft(ctx.out / "pretrain", convs, out, cfg, overwrite=True, log=ctx.log)
    model = LlmkitToolModel(out, max_new_tokens=64)

    ctx.log(f"held-out 3-4 digit problems: {s['eval_problems']} with the calculator, then with no tool")
    report = tool_use_eval(model, n=s["eval_problems"], kinds=LARGE_NUMBER_KINDS, system=None, log=ctx.log)
    calc_task = arithmetic_tasks(1, kinds=LARGE_NUMBER_KINDS, seed=20_261_127)[0]
    calc = run_agent(calc_task["question"], model, [calculator], max_steps=3, system=None)
    calc.save(out / "transcript_calculator.jsonl", overwrite=True)

    index = ctx.out / "rag" / "index"
    with open_store(index) as store:
        indexed = {d.id for d in store.documents()}
    search = make_rag_search(index, k_default=1, max_chars=SNIPPET_CHARS)
    tasks = [t for t in rag_search_tasks() if t["module"] in indexed][: s["eval_questions"]]
    rag_rows = []
    for t in tasks:
        r = run_agent(t["question"], model, [search], max_steps=3, system=None)
        first_call = next((c for m in r.messages for c in m.get("tool_calls", [])), None)
        found = t["answer"] in " ".join(search(t["query"]).split())
        seen = " ".join(" ".join(m["content"].split("\n", 1)[-1].split()) for m in r.messages if m["role"] == "tool")
        reply = r.answer.strip()
        rag_rows.append({"question": t["question"], "called": bool(first_call and first_call["name"] == "rag_search"),
                         "query_exact": bool(first_call and _query_of(first_call) == t["query"]), "passage_has_answer": found,
                         "answered": r.stopped == "answer" and t["answer"] in r.answer,
                         "quoted": r.stopped == "answer" and len(reply) >= 12 and reply in seen, "result": r})
    shown = next((row for row in rag_rows if row["answered"]), next((row for row in rag_rows if row["passage_has_answer"]), rag_rows[0] if rag_rows else None))
    if shown is not None:
        shown["result"].save(out / "transcript_rag.jsonl", overwrite=True)
    n = max(len(rag_rows), 1)
    rag = {"questions": len(rag_rows), "called": sum(r["called"] for r in rag_rows) / n, "query_exact": sum(r["query_exact"] for r in rag_rows) / n,
           "passage_has_answer": sum(r["passage_has_answer"] for r in rag_rows) / n, "answered": sum(r["answered"] for r in rag_rows) / n,
           "quoted": sum(r["quoted"] for r in rag_rows) / n,
           "transcript": shown["result"].transcript() if shown else ""}
    return {"settings": s, "dir": str(out), "index": str(index), "snippet_chars": SNIPPET_CHARS, "sft": {k: sft[k] for k in ("initial_val_loss", "val_loss", "seconds", "train_conversations")},
            "calculator": {"with_tools": _brief(report["with_tools"]), "without_tools": _brief(report["without_tools"]), "problems": report["problems"],
                           "transcript": calc.transcript(), "solved": calc.stopped == "answer" and solved(calc.answer, calc_task["answer"])},
            "rag": rag}


def _query_of(call: dict) -> str | None:
    args = call["arguments"]
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    return args.get("query") if isinstance(args, dict) else None


def _brief(r: dict) -> dict:
    return {k: r[k] for k in ("accuracy", "answered", "tool_calls", "tool_errors")}


def report_agents(r: dict) -> str:
    c, g, sft = r["calculator"], r["rag"], r["sft"]
    w, wo = c["with_tools"], c["without_tools"]
    lines = [f"The pre-trained GPT, chat-tuned for {r['settings']['steps']} steps on {sft['train_conversations']:,} tool-use conversations "
             f"(numbers tokenized digit by digit; {sft['seconds']:.0f} s; val loss on assistant tokens {sft['initial_val_loss']:.2f} -> "
             f"{sft['val_loss']:.2f}), in `{r['dir']}`." + (" A quick run trains far too briefly for the model to learn the tool-call "
                                                           "format (the full speedrun trains for longer; its result is in the README)."
                                                           if r["settings"]["steps"] < 200 else ""), "",
             f"Held-out word problems with 3-4 digit operands ({c['problems']}), exact answers:", "",
             "| | exact answers | tool calls | tool errors |", "| --- | ---: | ---: | ---: |",
             f"| with the calculator | {w['accuracy']:.1%} | {w['tool_calls']} | {w['tool_errors']} |",
             f"| no tool (the same model on its own) | {wo['accuracy']:.1%} | - | - |", "",
             "One held-out problem with the calculator:", "", "```", c["transcript"], "```", ""]
    if g["questions"]:
        lines += [f"Questions about {g['questions']} held-out stdlib functions, through `rag_search` over the index of stage 10 (one passage of "
                  f"at most {r.get('snippet_chars', 100)} characters): the model searched in {g['called']:.0%} (with the exact name in {g['query_exact']:.0%}); a search "
                  f"for the exact name finds the documented sentence in {g['passage_has_answer']:.0%}; the model's answer was that sentence in "
                  f"{g['answered']:.0%}, and a sentence quoted word for word from the passage it got in {g['quoted']:.0%}.", "",
                  "```", g["transcript"], "```", ""]
    index = r.get("index", str(Path(r["dir"]).parent / "rag" / "index"))
    lines.append(f"Try: `llmkit agent \"A factory makes 4821 bottles a day. How many bottles does it make in 377 days?\" --backend "
                 f"llmkit:{r['dir']} --system \"\"` and ``llmkit agent 'What does `heapq.heappush` do?' --backend llmkit:{r['dir']} --tools rag_search --rag-index "
                 f"{index} --rag-k 1 --rag-chars {r.get('snippet_chars', 100)} --system \"\"``.")
    return "\n".join(lines)
