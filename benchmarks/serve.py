"""Serving benchmark: aggregate generated tokens/s of ``llmkit serve`` at 1, 4 and 16 concurrent
clients, beside a naive server that answers one request at a time with transformers' ``generate``
on the same model. Goal: llmkit at 16 clients >= 4x llmkit at 1 client.

Both servers run in this process (uvicorn in a thread each, real HTTP on 127.0.0.1) and are
measured in the same run with the same clients: each client posts ``/v1/completions`` requests
(one after another) with the same prompt, greedy, ``max_tokens`` new tokens. Tokens/s = the
completion tokens the servers report in ``usage``, summed, divided by the wall time from the
first request to the last answer. The model is the ``small`` GPT preset (6 layers, width 384,
context 256) with GPT-2's 50,257-token vocabulary and random weights, saved as an llmkit run
and exported to a transformers directory for the naive server.

    .venv/bin/python benchmarks/serve.py            # full run (a few minutes on 2 cores)
    .venv/bin/python benchmarks/serve.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import Request  # module level: FastAPI resolves route annotations from this module's globals

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "serve"))
from _common import machine_info, print_table, verdict, write_results  # noqa: E402

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "serve.json"
GOAL = 4.0
PROMPT = "The json module provides functions to encode and decode"


def build_model(out: Path) -> tuple[Path, Path]:
    import torch

    from llmkit.hf.convert import export_model
    from llmkit.models.zoo import build_model as build, save_model
    from llmkit.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained("gpt2")
    torch.manual_seed(0)
    model = build("gpt", "small", vocab_size=tok.n_vocab)
    with torch.no_grad():  # away from the init, so it does not end every reply at once
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    save_model(model, out / "bench" / "model")
    tok.save(out / "bench" / "model")
    return out / "bench", export_model(out / "bench", out / "bench-hf")


def naive_app(hf_dir: Path):
    """One request at a time: a lock around transformers' generate."""
    import torch
    from fastapi import FastAPI
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(hf_dir).eval(), AutoTokenizer.from_pretrained(hf_dir)
    lock = threading.Lock()
    app = FastAPI()

    @app.post("/v1/completions")
    async def complete(request: Request):
        import asyncio

        body = await request.json()
        n = int(body.get("max_tokens", 16))

        def run():
            ids = tok(body["prompt"], return_tensors="pt")
            with lock, torch.no_grad():
                out = model.generate(**ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=tok.eos_token_id)
            new = out[0, ids["input_ids"].shape[1]:]
            return {"choices": [{"text": tok.decode(new)}], "usage": {"prompt_tokens": ids["input_ids"].shape[1], "completion_tokens": len(new)}}

        return await asyncio.to_thread(run)

    return app


def measure(url: str, model: str, clients: int, per_client: int, max_tokens: int) -> dict:
    import httpx

    def client(_):
        tokens = 0
        with httpx.Client(base_url=url, timeout=600) as c:
            for _ in range(per_client):
                r = c.post("/v1/completions", json={"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0})
                r.raise_for_status()
                tokens += r.json()["usage"]["completion_tokens"]
        return tokens

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        tokens = sum(pool.map(client, range(clients)))
    seconds = time.perf_counter() - t0
    return {"clients": clients, "requests": clients * per_client, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = ap.parse_args()
    import torch

    from llmkit.serve.app import create_app
    from llmkit.serve.models import load_served_model
    from serve_testutils import ServerThread

    max_tokens, levels = (16, (1, 4)) if args.quick else (64, (1, 4, 16))
    info = machine_info(("llmkit", "torch", "transformers", "fastapi", "uvicorn"), torch_threads=torch.get_num_threads())
    print(info)
    rows, results = [], {"machine": info, "max_tokens": max_tokens, "llmkit": [], "naive": []}
    with tempfile.TemporaryDirectory() as d:
        run, hf_dir = build_model(Path(d))
        served = load_served_model(run, "bench", device="cpu", max_batch=16, max_queue=256)
        with ServerThread(create_app([served])) as ours, ServerThread(naive_app(hf_dir)) as naive:
            for name, server in (("llmkit", ours), ("naive", naive)):
                measure(server.url, "bench", 1, 1, 4)  # warm-up
            for clients in levels:
                per_client = 2 if args.quick else max(2, 16 // clients)
                for name, server in (("llmkit", ours), ("naive", naive)):
                    r = measure(server.url, "bench", clients, per_client, max_tokens)
                    results[name].append(r)
                    print(f"{name:7s} {clients:2d} clients: {r['tokens']} tokens in {r['seconds']:.1f} s = {r['tokens_per_s']:.1f} tokens/s", flush=True)
    base = results["llmkit"][0]["tokens_per_s"]
    for ours_r, naive_r in zip(results["llmkit"], results["naive"]):
        rows.append([str(ours_r["clients"]), f"{ours_r['tokens_per_s']:.1f}", f"{naive_r['tokens_per_s']:.1f}",
                     f"{ours_r['tokens_per_s'] / naive_r['tokens_per_s']:.2f}x", f"{ours_r['tokens_per_s'] / base:.2f}x"])
    print_table(["clients", "llmkit tok/s", "naive tok/s", "llmkit / naive", "llmkit / llmkit@1"], rows)
    scale = results["llmkit"][-1]["tokens_per_s"] / base
    results["scaling"] = scale
    print(f"llmkit at {levels[-1]} clients / at 1 client: {scale:.2f}x (goal >= {GOAL:g}x at 16): {verdict(scale, GOAL)}")
    write_results(args.json, results)


if __name__ == "__main__":
    main()
