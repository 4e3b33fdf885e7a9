"""Helpers for the serving tests (imported by file name: pytest puts tests/serve on sys.path)."""

from __future__ import annotations

import socket
import threading
import time

import torch

from llmkit.models.zoo import build_model, save_model
from llmkit.tokenizer import Tokenizer

TEXTS = ["def f(x):\n    return x ** 2\n", "The quick brown fox jumps over the lazy dog. 12345", "Hello, world! café naïve 日本"]


def tiny_run(directory, tok: Tokenizer | None = None, seed: int = 0, context_length: int = 64):
    """A small GPT run directory with weights far from their init (varied text, not one token repeated)."""
    tok = tok or Tokenizer.train(TEXTS * 10, 300, pattern="gpt4")
    torch.manual_seed(seed)
    model = build_model("gpt", "tiny", vocab_size=tok.n_vocab, context_length=context_length, n_embd=64)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    save_model(model, directory / "model")
    tok.save(directory / "model")
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn serving ``app`` on 127.0.0.1 in a background thread (a real socket)."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
