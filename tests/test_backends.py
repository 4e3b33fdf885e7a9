"""llmkit.backends: the llmkit backend agrees with transformers (the outside truth) on greedy
text and embeddings of the same exported model; the OpenAI backend speaks OpenAI's wire
format to a stub server on 127.0.0.1 (request bodies, auth header, responses, errors);
the HF InferenceClient backend takes its token from HF_TOKEN and talks to a local stub."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from llmkit.backends import (
    HFInferenceBackend,
    LlmkitBackend,
    OpenAIBackend,
    TransformersBackend,
    cut_at_stop,
    open_backend,
)
from llmkit.chat import ChatTemplate, ensure_chat_tokens
from llmkit.hf.convert import export_model
from llmkit.models.zoo import build_model, save_model
from llmkit.tokenizer import Tokenizer

TEXTS = ["def f(x):\n    return x ** 2\n", "The quick brown fox jumps over the lazy dog. 12345", "Hello, world! café"]


def _run(tmp_path_factory, name, tok, seed):
    run = tmp_path_factory.mktemp(name)
    torch.manual_seed(seed)
    model = build_model("gpt", "tiny", vocab_size=tok.n_vocab, context_length=64, n_embd=64)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # weights far from init, so the text is not one repeated token
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    save_model(model, run / "model")
    tok.save(run / "model")
    return run


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    return _run(tmp_path_factory, "plain", Tokenizer.train(TEXTS * 10, 300, pattern="gpt4"), 0)


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory):
    tok = ensure_chat_tokens(Tokenizer.train(TEXTS * 10, 300, pattern="gpt4"))
    run = _run(tmp_path_factory, "chat", tok, 1)
    (run / "model" / "chat_template.json").write_text(json.dumps(ChatTemplate(tok).describe()))
    return run


@pytest.fixture(scope="module")
def exported(tmp_path_factory, plain_run):
    return export_model(plain_run, tmp_path_factory.mktemp("hf") / "out")


@pytest.fixture(scope="module")
def exported_chat(tmp_path_factory, chat_run):
    return export_model(chat_run, tmp_path_factory.mktemp("hfchat") / "out")


# --------------------------------------------------------------------------- local models


def test_llmkit_greedy_generation_and_embeddings_match_transformers(plain_run, exported):
    ours, theirs = LlmkitBackend(plain_run), TransformersBackend(exported, device="cpu")
    for prompt in ("def f(x", "The quick"):
        a = ours.generate(prompt, max_new_tokens=20)
        assert a and a == theirs.generate(prompt, max_new_tokens=20)
    a, b = ours.embed(TEXTS), theirs.embed(TEXTS)
    assert len(a) == 3 and len(a[0]) == 64
    assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-4)
    full = ours.generate("The quick", max_new_tokens=20)
    assert ours.generate("The quick", max_new_tokens=20, stop=[full[3:6]]) == full[: full.find(full[3:6])] == cut_at_stop(full, full[3:6])


def test_seeded_sampling_repeats_and_plain_chat_is_the_joined_prompt(plain_run):
    ours = LlmkitBackend(plain_run)
    s = dict(max_new_tokens=15, temperature=1.0, top_k=20, seed=3)
    assert ours.generate("def", **s) == ours.generate("def", **s)
    msgs = [{"role": "user", "content": "hi"}]
    assert ours.chat(msgs, max_new_tokens=10) == ours.generate("user: hi\nassistant:", max_new_tokens=10)
    with pytest.raises(ValueError, match="temperature"):
        ours.generate("x", temperature=-1)
    with pytest.raises(ValueError, match="list of strings"):
        ours.embed("one string")


def test_chat_through_the_template_matches_transformers_chat_template(chat_run, exported_chat):
    ours, theirs = LlmkitBackend(chat_run), TransformersBackend(exported_chat, device="cpu")
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "def f(x"}]
    assert ours.chat(msgs, max_new_tokens=20) == theirs.chat(msgs, max_new_tokens=20)


def test_open_backend_picks_by_spec_and_directory(plain_run, exported):
    assert isinstance(open_backend(str(plain_run)), LlmkitBackend)
    assert isinstance(open_backend(f"llmkit:{plain_run}"), LlmkitBackend)
    assert isinstance(open_backend(str(exported)), TransformersBackend)
    assert isinstance(open_backend(f"hf:{exported}"), TransformersBackend)
    b = open_backend("openai:http://127.0.0.1:9/v1#tiny")
    assert isinstance(b, OpenAIBackend) and b.base_url == "http://127.0.0.1:9" and b.model == "tiny"
    with pytest.raises(ValueError, match="llmkit:RUN_DIR.*hf-inference:MODEL"):
        open_backend("ollama:llama3")
    with pytest.raises(ValueError, match="after '#'"):
        open_backend("openai:http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="names nothing"):
        open_backend("hf:")
    with pytest.raises(ValueError, match="unknown backend spec"):
        open_backend("/no/such/dir")
    with pytest.raises(ValueError, match="http:// or https://"):
        open_backend("openai:127.0.0.1:9#m")


# --------------------------------------------------------------------------- OpenAI-compatible stub


class _Stub(BaseHTTPRequestHandler):
    """Answers in OpenAI's JSON shapes and records (path, headers, body) of each request."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append((self.path, dict(self.headers), body))
        if body.get("model") == "missing":
            return self._send(404, {"error": {"message": "The model `missing` does not exist", "type": "invalid_request_error"}})
        if self.path.endswith("/completions") and "chat" not in self.path:
            return self._send(200, {"object": "text_completion", "choices": [{"index": 0, "text": " world STOP here", "finish_reason": "length"}]})
        if self.path.endswith("/chat/completions"):
            msg = {"role": "assistant", "content": "hello there"}
            return self._send(200, {"object": "chat.completion", "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}]})
        if self.path.endswith("/embeddings"):
            data = [{"object": "embedding", "index": i, "embedding": [float(i), 0.5]} for i in range(len(body["input"]))]
            return self._send(200, {"object": "list", "data": data[::-1], "model": body["model"]})  # out of order on purpose
        self._send(404, {"error": "no route"})

    def _send(self, code, obj):
        raw = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture()
def stub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    server.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_openai_backend_speaks_the_openai_wire_format(stub, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123")
    b = OpenAIBackend(f"http://127.0.0.1:{stub.server_port}/v1/", "tiny")
    assert b.generate("Hello", max_new_tokens=7, temperature=0.5, stop=[" STOP"]) == " world"
    assert b.chat([{"role": "user", "content": "hi"}], max_new_tokens=5) == "hello there"
    assert b.embed(["a", "b"]) == [[0.0, 0.5], [1.0, 0.5]]
    (p1, h1, c1), (p2, _, c2), (p3, _, c3) = stub.seen
    assert p1 == "/v1/completions" and p2 == "/v1/chat/completions" and p3 == "/v1/embeddings"
    assert h1["Authorization"] == "Bearer sk-test-123"
    assert c1 == {"model": "tiny", "prompt": "Hello", "max_tokens": 7, "temperature": 0.5, "top_p": 1.0, "stop": [" STOP"]}
    assert c2["messages"] == [{"role": "user", "content": "hi"}] and c2["max_tokens"] == 5 and c2["temperature"] == 0.0
    assert c3 == {"model": "tiny", "input": ["a", "b"]}
    assert "sk-test" not in repr(b)


def test_openai_backend_errors_are_one_line_oserrors(stub, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    b = OpenAIBackend(f"http://127.0.0.1:{stub.server_port}", "missing", api_key="sk-secret")
    with pytest.raises(OSError, match=r"HTTP 404: The model `missing` does not exist$") as e:
        b.generate("x")
    assert "\n" not in str(e.value) and "sk-secret" not in str(e.value)
    assert stub.seen[-1][1]["Authorization"] == "Bearer sk-secret"
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # a port nobody listens on
    with pytest.raises(OSError, match=f"cannot reach the OpenAI-compatible server at http://127.0.0.1:{port}/v1/chat/completions"):
        OpenAIBackend(f"http://127.0.0.1:{port}", "m", timeout=2).chat([{"role": "user", "content": "hi"}])
    nokey = OpenAIBackend(f"http://127.0.0.1:{stub.server_port}", "tiny")
    nokey.embed(["x"])
    assert "Authorization" not in stub.seen[-1][1]


# --------------------------------------------------------------------------- HF InferenceClient


def test_hf_inference_takes_the_token_from_hf_token_and_talks_to_a_local_endpoint(stub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    assert HFInferenceBackend("some/model").client.token == "hf_from_env"
    assert HFInferenceBackend("some/model", token="hf_arg").client.token == "hf_arg"
    b = HFInferenceBackend(None, base_url=f"http://127.0.0.1:{stub.server_port}")
    with pytest.raises(OSError, match=r"chat_completion.*failed: .*offline mode") as e:  # conftest sets HF_HUB_OFFLINE
        b.chat([{"role": "user", "content": "hi"}])
    assert "\n" not in str(e.value)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)  # this test's endpoint is 127.0.0.1 only
    assert b.chat([{"role": "user", "content": "hi"}], max_new_tokens=4) == "hello there"
    path, headers, body = stub.seen[-1]
    headers = {k.lower(): v for k, v in headers.items()}
    assert path == "/v1/chat/completions" and headers.get("authorization") == "Bearer hf_from_env", headers
    assert body["messages"] == [{"role": "user", "content": "hi"}] and body["max_tokens"] == 4
    with pytest.raises(ValueError, match="model id or a base_url"):
        HFInferenceBackend(None)


def test_an_encoder_embeds_like_sentence_transformers_and_refuses_to_generate():
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from llmkit.hf.pipelines import resolve_model

    texts = ["A man is eating food.", "The stock market fell on Monday."]
    llm = open_backend("hf:minilm")
    ours = np.array(llm.embed(texts))
    ours /= np.linalg.norm(ours, axis=1, keepdims=True)
    assert np.allclose(ours, SentenceTransformer(resolve_model("minilm"), device="cpu").encode(texts), atol=1e-5)
    with pytest.raises(ValueError, match="is an encoder .* cannot generate"):
        llm.generate("Hello")
