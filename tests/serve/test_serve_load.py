"""A bounded load test on loopback: 16 concurrent clients send 400 requests, valid and
invalid mixed. Zero 5xx; every valid request answered (200, usage counted); every invalid one
a 4xx JSON error; the server's memory back near its baseline afterwards."""

from __future__ import annotations

import gc
import json
import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from llmkit.serve.app import create_app
from llmkit.serve.models import load_served_model
from llmkit.training.perf import PeakMemory
from serve_testutils import ServerThread, tiny_run

KEY = "load-key"
N_REQUESTS = 400
CLIENTS = 16


def _requests(seed: int = 0) -> list[tuple[str, str, object, dict, bool]]:
    """(method path, body bytes or JSON, headers, valid?) in a seeded mix."""
    auth = {"Authorization": f"Bearer {KEY}"}
    valid = [
        ("/v1/completions", {"model": "tiny", "prompt": "The quick", "max_tokens": 8}, auth),
        ("/v1/completions", {"model": "tiny", "prompt": "def f", "max_tokens": 6, "temperature": 0.7, "seed": 3, "n": 2}, auth),
        ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}, auth),
        ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8, "stream": True}, auth),
        ("/v1/embeddings", {"model": "tiny", "input": ["a b c", "d e"]}, auth),
        ("/v1/models", None, auth),
    ]
    invalid = [
        ("/v1/completions", b"{oops", auth),
        ("/v1/completions", {"model": "nope", "prompt": "x"}, auth),
        ("/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 10_000}, auth),
        ("/v1/completions", {"model": "tiny", "prompt": ["a", 1]}, auth),
        ("/v1/chat/completions", {"model": "tiny", "messages": "hi"}, auth),
        ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "top_p": 7}, auth),
        ("/v1/completions", {"model": "tiny", "prompt": "x"}, {"Authorization": "Bearer wrong"}),
        ("/v1/embeddings", {"model": "tiny", "input": 42}, auth),
    ]
    rng = random.Random(seed)
    return [(*rng.choice(valid), True) if rng.random() < 0.6 else (*rng.choice(invalid), False) for _ in range(N_REQUESTS)]


@pytest.mark.slow
def test_400_mixed_requests_from_16_clients(tmp_path):
    model = load_served_model(tiny_run(tmp_path / "tiny", context_length=128), device="cpu", max_batch=8, max_queue=64)
    with ServerThread(create_app([model], api_key=KEY)) as server:
        with httpx.Client(base_url=server.url, timeout=60) as warm:  # first requests load lazily: count memory after them
            for path, body, headers, _ in _requests(1)[:20]:
                _send(warm, path, body, headers)
        gc.collect()
        baseline = PeakMemory.rss_bytes()

        def one(item):
            path, body, headers, valid = item
            with httpx.Client(base_url=server.url, timeout=60) as c:
                return valid, _send(c, path, body, headers)

        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(one, _requests()))
        gc.collect()
        after = PeakMemory.rss_bytes()
        assert model.engine.load() == {"waiting": 0, "active": 0, "slots": 8}
    statuses = [status for _, (status, _) in results]
    assert not [s for s in statuses if s >= 500]
    for valid, (status, payload) in results:
        if valid:
            assert status == 200, payload
            assert "usage" in payload or payload.get("object") == "list"
        else:
            assert 400 <= status < 500 and set(payload["error"]) == {"message", "type", "param", "code"}, payload
    assert sum(v for v, _ in results) > 200 and sum(not v for v, _ in results) > 100
    if baseline is not None:
        assert after - baseline < 64 * 2**20, f"memory grew by {(after - baseline) / 2**20:.0f} MiB"


def _send(client: httpx.Client, path: str, body, headers: dict) -> tuple[int, dict]:
    if body is None:
        r = client.get(path, headers=headers)
        return r.status_code, r.json()
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    if isinstance(body, dict) and body.get("stream"):
        with client.stream("POST", path, content=content, headers={**headers, "Content-Type": "application/json"}) as r:
            lines = [line for line in r.iter_lines() if line.startswith("data: ")]
            if r.status_code != 200:
                return r.status_code, json.loads(r.read() or b"{}")
            assert lines[-1] == "data: [DONE]"
            return r.status_code, json.loads(lines[-2][6:])  # the usage chunk
    r = client.post(path, content=content, headers={**headers, "Content-Type": "application/json"})
    return r.status_code, r.json()
