"""``llmkit serve``: an OpenAI-compatible HTTP server for llmkit and transformers models."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from llmkit.cli._common import cli_errors, console, err_console, fail


def parse_model_args(models: list[str]) -> list[tuple[str | None, str]]:
    """``PATH`` or ``NAME=PATH`` -> (name or None, path)."""
    out = []
    for m in models:
        name, sep, path = m.partition("=")
        if sep and name and path and "/" not in name:
            out.append((name, path))
        else:
            out.append((None, m))
    return out


@cli_errors
def serve(
    models: Annotated[list[str], typer.Argument(help="llmkit runs or transformers causal-LM directories; NAME=PATH names one")],
    host: Annotated[str, typer.Option("--host", help="address to bind; 127.0.0.1 keeps it on this machine")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port")] = 8000,
    api_key: Annotated[Optional[str], typer.Option("--api-key", help="require 'Authorization: Bearer KEY' on /v1 (default: $LLMKIT_API_KEY, if set)")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps")] = "auto",
    max_batch: Annotated[int, typer.Option("--max-batch", help="requests generated together per model (KV-cache slots)")] = 8,
    max_queue: Annotated[int, typer.Option("--max-queue", help="requests that may wait for a slot; beyond: 429")] = 64,
    max_wait: Annotated[float, typer.Option("--max-wait", help="seconds a request may wait for a slot; beyond: 503")] = 60.0,
    rag_index: Annotated[Optional[str], typer.Option("--rag-index", help="an llmkit rag index: POST /v1/rag answers from it with citations")] = None,
) -> None:
    """Serve models over the OpenAI API: /v1/models, /v1/completions, /v1/chat/completions
    (streaming), /v1/embeddings (all-MiniLM-L6-v2 or a model's own), /health.

    Any OpenAI client works: base_url http://HOST:PORT/v1."""
    import uvicorn

    from llmkit.serve.app import create_app
    from llmkit.serve.models import load_served_model

    if not 1 <= port <= 65535:
        fail("--port must be in 1..65535")
    if max_batch < 1 or max_queue < 1 or not max_wait > 0:
        fail("--max-batch and --max-queue must be >= 1 and --max-wait > 0")
    key = api_key or os.environ.get("LLMKIT_API_KEY") or None
    served = [load_served_model(path, name, device=device, max_batch=max_batch, max_queue=max_queue, max_wait=max_wait)
              for name, path in parse_model_args(models)]
    app = create_app(served, api_key=key, rag_index=rag_index)
    if host not in ("127.0.0.1", "localhost", "::1") and key is None:
        err_console.print(f"warning: serving on {host} without --api-key: anyone who can reach this port can use the models", highlight=False)
    first = served[0].name
    auth = ' -H "Authorization: Bearer $LLMKIT_API_KEY"' if key else ""
    console.print(f"serving {', '.join(m.name for m in served)} (+ all-MiniLM-L6-v2 embeddings) at http://{host}:{port}/v1", highlight=False, soft_wrap=True)
    console.print(f"try: curl http://{host}:{port}/v1/chat/completions -H 'Content-Type: application/json'{auth} "
                  f"-d '{{\"model\": \"{first}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}], \"max_tokens\": 30}}'",
                  highlight=False, soft_wrap=True, markup=False)
    uvicorn.run(app, host=host, port=port, log_level="warning")
