"""The OpenAI-compatible HTTP server (FastAPI): ``create_app(models)``, run by ``llmkit serve``.

Endpoints, in the shapes the OpenAI API (and its official clients) use:

    GET  /health                  liveness and each engine's load
    GET  /v1/models               the generating models and the embedding model
    POST /v1/completions          prompt -> text (``stream``, ``stop``, ``max_tokens``, ``temperature``,
                                  ``top_p``, ``seed``, ``n``); usage counts in every response
    POST /v1/chat/completions     messages -> reply, the same options; ``stream: true`` sends
                                  server-sent events (``data: {chunk}`` ... ``data: [DONE]``)
    POST /v1/embeddings           all-MiniLM-L6-v2, or a served model's mean-pooled hidden states

Bad input never gets a 500: malformed JSON or fields -> 400, a missing or wrong API key -> 401,
an unknown model -> 404, a prompt that with ``max_tokens`` exceeds the context window -> 400
naming the limit, a full queue -> 429 and a request that waited too long -> 503 (both with
``Retry-After``); all in OpenAI's error shape ``{"error": {"message", "type", "param", "code"}}``.
A client that disconnects has its generation cancelled.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import struct
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from fastapi import Request  # at module level: route signatures are resolved from this module's globals

from llmkit.serve.engine import Event, QueueFull, SamplingParams
from llmkit.serve.models import EmbeddingModel, ServedModel
from llmkit.serve.requests import APIError, messages, number, offers_tools, sampling, tool_message

__all__ = ["APIError", "create_app"]

PAGE = Path(__file__).parent / "static" / "index.html"
MAX_EMBED_INPUTS = 256


# -- the app -----------------------------------------------------------------------------------------
def create_app(models: Sequence[ServedModel], *, api_key: str | None = None, embedding: EmbeddingModel | None = None, rag_index=None):
    """The FastAPI app serving ``models`` (and ``embedding``, default all-MiniLM-L6-v2). With
    ``api_key`` every /v1 call needs ``Authorization: Bearer <api_key>``. With ``rag_index``
    (an ``llmkit rag index`` directory) ``POST /v1/rag`` answers questions from it with citations."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    by_name = {m.name: m for m in models}
    if len(by_name) != len(models):
        raise ValueError("two served models have the same name; name them with NAME=PATH")
    embedding = embedding or EmbeddingModel()
    created = int(time.time())
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        for m in by_name.values():  # server shutdown: end the engines' threads
            m.engine.close()

    app = FastAPI(title="llmkit", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.models = by_name

    def error_response(e: APIError) -> JSONResponse:
        headers = {"Retry-After": str(e.retry_after)} if e.retry_after is not None else None
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError):
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError):
        return error_response(APIError(400, f"invalid request: {str(e).splitlines()[0][:200]}"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return error_response(APIError(e.status_code, f"{request.method} {request.url.path}: {e.detail}", type=kind))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception):  # a bug, not bad input: still JSON, still one line
        return error_response(APIError(500, f"internal error: {type(e).__name__}: {str(e)[:200]}", type="server_error"))

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if api_key is not None and request.url.path.startswith(("/v1", "/api")):
            given = request.headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), api_key.encode()):
                why = "missing API key: send 'Authorization: Bearer <key>'" if not given else "incorrect API key"
                return error_response(APIError(401, why, type="authentication_error", code="invalid_api_key"))
        return await call_next(request)

    async def json_body(request: Request) -> dict:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"the body is not valid JSON ({getattr(e, 'msg', e)})") from None
        if not isinstance(body, dict):
            raise APIError(400, "the body must be a JSON object")
        return body

    def pick_model(body: dict) -> ServedModel:
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise APIError(400, "'model' is required", param="model")
        if name not in by_name:
            raise APIError(404, f"the model '{name}' does not exist here; see GET /v1/models ({', '.join(by_name)})", param="model",
                           code="model_not_found", type="not_found_error")
        return by_name[name]

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": {n: m.engine.load() for n, m in by_name.items()}}

    @app.get("/v1/models")
    async def list_models():
        data = [{"id": n, "object": "model", "created": created, "owned_by": f"llmkit ({m.kind})"} for n, m in by_name.items()]
        data.append({"id": embedding.name, "object": "model", "created": created, "owned_by": "llmkit (embeddings)"})
        return {"object": "list", "data": data}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await json_body(request)
        model = pick_model(body)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            ids = list(prompt)
        elif isinstance(prompt, str):
            try:
                ids = model.completion_ids(prompt)
            except ValueError as e:
                raise APIError(400, str(e), param="prompt") from None
        else:
            raise APIError(400, "'prompt' must be a string (or a list of token ids)", param="prompt")
        params, n = sampling(body, model, len(ids), model.stop_tokens, 16)
        return await respond(request, model, ids, params, n, body, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await json_body(request)
        model = pick_model(body)
        tools = offers_tools(body, model)
        try:
            ids = model.chat_ids(messages(body))
        except ValueError as e:  # the chat template's own checks (tool turns out of order ...)
            raise APIError(400, str(e), param="messages") from None
        params, n = sampling(body, model, len(ids), model.chat_stop_tokens, None, "messages")
        return await respond(request, model, ids, params, n, body, chat=True, tools=tools)

    async def respond(request: Request, model: ServedModel, ids: list[int], params: SamplingParams, n: int, body: dict, *, chat: bool,
                      tools: bool = False):
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise APIError(400, "'stream' must be true or false", param="stream")
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        handles = []
        try:
            for i in range(n):
                p = params if params.seed is None or i == 0 else SamplingParams(**{**params.__dict__, "seed": params.seed + i})
                handles.append(model.engine.submit(ids, p, sink=lambda ev, i=i: loop.call_soon_threadsafe(events.put_nowait, (i, ev))))
        except QueueFull as e:
            for h in handles:
                h.cancel()
            raise APIError(429, str(e), type="rate_limit_error", code="queue_full", retry_after=1) from None
        except ValueError as e:
            raise APIError(400, str(e), param="max_tokens") from None
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        if stream and tools:  # a tool call is only known once the reply is complete: answer whole, as one chunk per choice
            whole = await collect(request, rid, model, events, handles, n, chat, tools)
            return StreamingResponse(_as_stream(whole), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        if stream:
            return StreamingResponse(sse(rid, model, events, handles, n, chat, body), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await collect(request, rid, model, events, handles, n, chat, tools)

    async def collect(request: Request, rid: str, model: ServedModel, events: asyncio.Queue, handles, n: int, chat: bool, tools: bool = False):
        texts, done = [[] for _ in range(n)], [None] * n
        try:
            while not all(done):
                try:
                    i, ev = await asyncio.wait_for(events.get(), timeout=0.5)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return JSONResponse({}, status_code=499)
                    continue
                if ev.kind == "text":
                    texts[i].append(ev.text)
                else:
                    done[i] = ev
        finally:
            for h in handles:
                h.cancel()  # a no-op for finished requests; frees the slots of a vanished client's
        failed = next((d for d in done if d.finish_reason == "error"), None)
        if failed is not None:
            raise APIError(503, f"generation failed: {failed.error}", type="server_error", code="engine_busy", retry_after=2)
        choices = []
        for i, d in enumerate(done):
            text = "".join(texts[i])
            if chat and tools:
                message, reason = tool_message(text)
                choices.append({"index": i, "message": message, "finish_reason": reason if d.finish_reason == "stop" else d.finish_reason, "logprobs": None})
            elif chat:
                choices.append({"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": d.finish_reason, "logprobs": None})
            else:
                choices.append({"index": i, "text": text, "finish_reason": d.finish_reason, "logprobs": None})
        completion = sum(d.completion_tokens for d in done)
        return {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()), "model": model.name,
                "choices": choices, "usage": _usage(done[0].prompt_tokens, completion)}

    async def sse(rid: str, model: ServedModel, events: asyncio.Queue, handles, n: int, chat: bool, body: dict):
        obj = "chat.completion.chunk" if chat else "text_completion"
        now = int(time.time())

        def chunk(i: int, delta: str | None, finish: str | None, role: bool = False) -> str:
            if chat:
                d = {"role": "assistant", "content": ""} if role else ({"content": delta} if delta is not None else {})
                choice = {"index": i, "delta": d, "finish_reason": finish, "logprobs": None}
            else:
                choice = {"index": i, "text": delta or "", "finish_reason": finish, "logprobs": None}
            return "data: " + json.dumps({"id": rid, "object": obj, "created": now, "model": model.name, "choices": [choice]}) + "\n\n"

        done: list[Event | None] = [None] * n
        try:
            if chat:
                for i in range(n):
                    yield chunk(i, None, None, role=True)
            while not all(done):
                i, ev = await events.get()
                if ev.kind == "text":
                    yield chunk(i, ev.text, None)
                    continue
                done[i] = ev
                if ev.finish_reason == "error":
                    err = APIError(503, f"generation failed: {ev.error}", type="server_error", code="engine_busy")
                    yield "data: " + json.dumps(err.body()) + "\n\n"
                    return
                yield chunk(i, None, ev.finish_reason)
            usage = _usage(done[0].prompt_tokens, sum(d.completion_tokens for d in done))
            yield "data: " + json.dumps({"id": rid, "object": obj, "created": now, "model": model.name, "choices": [], "usage": usage}) + "\n\n"
            yield "data: [DONE]\n\n"
        finally:  # the client went away (or the stream ended): stop the work
            for h in handles:
                h.cancel()

    @app.get("/", include_in_schema=False)
    async def page():
        from fastapi.responses import HTMLResponse

        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    def page_text(body: dict) -> str:
        text = body.get("text")
        if not isinstance(text, str) or not text:
            raise APIError(400, "'text' must be a non-empty string", param="text")
        if len(text) > 20000:
            raise APIError(400, "'text' is too long for this view (20,000 characters at most)", param="text")
        return text

    @app.post("/api/tokenize")
    async def tokenize(request: Request):
        body = await json_body(request)
        model, text = pick_model(body), page_text(body)
        return {"model": model.name, "tokens": [{"id": t, "text": piece} for t, piece in model.pieces(text)]}

    @app.post("/api/attention")
    async def attention(request: Request):
        body = await json_body(request)
        model, text = pick_model(body), page_text(body)
        if model.attention is None:
            raise APIError(400, f"the attention view needs an llmkit model; '{model.name}' is a {model.kind} model", param="model")
        try:
            return {"model": model.name, **await asyncio.to_thread(model.attention, text)}
        except ValueError as e:
            raise APIError(400, str(e), param="text") from None

    retriever = None
    if rag_index is not None:
        from llmkit.rag.retrieve import Retriever

        retriever = Retriever(rag_index)

    @app.post("/v1/rag")
    async def rag(request: Request):
        """{"question", "k"?, "method"?, "mmr"?, "model"?, "max_tokens"?} -> an answer with numbered
        sources: extractive, or written by a served ``model`` from the numbered sources."""
        from llmkit.rag.answer import Answer, build_prompt, extractive_answer, sources_of
        from llmkit.rag.retrieve import METHODS

        if retriever is None:
            raise APIError(404, "this server has no RAG index; start it with --rag-index INDEX", type="not_found_error")
        body = await json_body(request)
        question = body.get("question")
        if not isinstance(question, str) or not question.strip():
            raise APIError(400, "'question' must be a non-empty string", param="question")
        k = number(body, "k", 5, 1, 50, integer=True)
        method = body.get("method", "hybrid")
        if method not in METHODS:
            raise APIError(400, f"'method' must be one of {', '.join(METHODS)}", param="method")
        mmr = None if body.get("mmr") is None else number(body, "mmr", None, 0, 1)
        hits = await asyncio.to_thread(retriever.retrieve, question, k, method, mmr)
        if body.get("model") is None:
            result = await asyncio.to_thread(extractive_answer, question, hits, retriever.embedder)
            return {"object": "rag.answer", **result.to_dict()}
        model = pick_model(body)
        ids = model.completion_ids(build_prompt(question, hits))
        params, _ = sampling({**body, "temperature": body.get("temperature", 0)}, model, len(ids), model.stop_tokens, 200, "question")
        try:
            done = await asyncio.to_thread(lambda: model.engine.submit(ids, params).result())
        except QueueFull as e:
            raise APIError(429, str(e), type="rate_limit_error", code="queue_full", retry_after=1) from None
        result = Answer(question, done.text.strip(), sources_of(hits), model.name)
        return {"object": "rag.answer", **result.to_dict(), "usage": _usage(done.prompt_tokens, done.completion_tokens)}

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        body = await json_body(request)
        name = body.get("model") or embedding.name
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            raise APIError(400, "'input' must be a non-empty string or a list of non-empty strings", param="input")
        if len(texts) > MAX_EMBED_INPUTS:
            raise APIError(400, f"at most {MAX_EMBED_INPUTS} inputs per request", param="input")
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise APIError(400, "'encoding_format' must be float or base64", param="encoding_format")
        if name in (embedding.name, "minilm"):
            embed, count, name = embedding.embed, embedding.count_tokens, embedding.name
        elif name in by_name:
            embed, count = by_name[name].embed, by_name[name].count_tokens
        else:
            raise APIError(404, f"the model '{name}' does not exist here; see GET /v1/models", param="model", code="model_not_found", type="not_found_error")
        vectors = await asyncio.to_thread(embed, texts)
        tokens = sum(count(t) for t in texts)
        data = [{"object": "embedding", "index": i, "embedding": _encode_vector(v, fmt)} for i, v in enumerate(vectors)]
        return {"object": "list", "data": data, "model": name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    return app


async def _as_stream(whole: dict):
    """A finished chat completion as server-sent events (used when tools were offered)."""
    for c in whole["choices"]:
        msg = c["message"]
        delta = {"role": "assistant", "content": msg.get("content")}
        if msg.get("tool_calls"):
            delta["tool_calls"] = [{"index": k, **call} for k, call in enumerate(msg["tool_calls"])]
        chunk = {"id": whole["id"], "object": "chat.completion.chunk", "created": whole["created"], "model": whole["model"],
                 "choices": [{"index": c["index"], "delta": delta, "finish_reason": c["finish_reason"], "logprobs": None}]}
        yield "data: " + json.dumps(chunk) + "\n\n"
    yield "data: " + json.dumps({"id": whole["id"], "object": "chat.completion.chunk", "created": whole["created"], "model": whole["model"],
                                 "choices": [], "usage": whole["usage"]}) + "\n\n"
    yield "data: [DONE]\n\n"


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _encode_vector(v: list[float], fmt: str):
    if fmt == "float":
        return v
    return base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode("ascii")  # little-endian float32, as OpenAI sends
