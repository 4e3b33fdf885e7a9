"""``llmkit serve``: the official ``openai`` client against a real server on 127.0.0.1.

Outside truths: the ``openai`` client itself (it parses every response and error into its
types); llmkit's own greedy ``generate`` for the text; sentence-transformers for the
all-MiniLM-L6-v2 embeddings; the chat template's own prompt ids for the usage counts."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import numpy as np
import openai
import pytest

from llmkit.chat import ChatTemplate, ensure_chat_tokens
from llmkit.generation import encode_prompt, generate_text
from llmkit.serve.app import create_app
from llmkit.serve.models import load_served_model
from llmkit.tokenizer import Tokenizer
from serve_testutils import TEXTS, ServerThread, free_port, tiny_run

KEY = "test-key-123"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    plain = load_served_model(tiny_run(d / "tiny"), device="cpu", max_batch=4, max_queue=16)
    chat_tok = ensure_chat_tokens(Tokenizer.train(TEXTS * 10, 300, pattern="gpt4"))
    chat = load_served_model(tiny_run(d / "chatty", chat_tok, seed=1), device="cpu", max_batch=4)
    with ServerThread(create_app([plain, chat], api_key=KEY)) as server:
        yield server, {"tiny": plain, "chatty": chat}


@pytest.fixture
def client(served):
    server, _ = served
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def test_models_list(client):
    assert [m.id for m in client.models.list().data] == ["tiny", "chatty", "all-MiniLM-L6-v2"]


def test_completion_is_llmkits_greedy_text_with_usage(client, served):
    _, models = served
    m = models["tiny"]
    r = client.completions.create(model="tiny", prompt="The quick", max_tokens=12, temperature=0)
    want = generate_text(m.model, m.tokenizer, "The quick", 12, temperature=0.0)
    assert r.choices[0].text == want
    n_prompt = len(encode_prompt(m.tokenizer, "The quick"))
    assert r.usage.prompt_tokens == n_prompt and r.usage.total_tokens == n_prompt + r.usage.completion_tokens
    assert r.object == "text_completion" and r.model == "tiny"


def test_n_choices_and_seeded_sampling_repeat(client):
    kw = dict(model="tiny", prompt="def f", max_tokens=8, temperature=1.0, seed=5, n=3)
    a, b = client.completions.create(**kw), client.completions.create(**kw)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert [c.index for c in a.choices] == [0, 1, 2] and len({c.text for c in a.choices}) > 1
    assert 3 <= a.usage.completion_tokens <= 3 * 8  # each choice ends at <|endoftext|> or after 8 tokens


def test_chat_uses_the_chat_template_and_streams_the_same_text(client, served):
    _, models = served
    m = models["chatty"]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}]
    r = client.chat.completions.create(model="chatty", messages=messages, max_tokens=15, temperature=0)
    assert r.usage.prompt_tokens == len(ChatTemplate(m.tokenizer).prompt_ids(messages))
    assert r.choices[0].message.role == "assistant"
    chunks = list(client.chat.completions.create(model="chatty", messages=messages, max_tokens=15, temperature=0, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [r.choices[0].finish_reason]
    assert chunks[-1].usage.total_tokens == r.usage.total_tokens  # usage in the stream too


def test_stop_strings(client, served):
    full = client.completions.create(model="tiny", prompt="Hello", max_tokens=20, temperature=0).choices[0].text
    stop = full[4:7]
    r = client.completions.create(model="tiny", prompt="Hello", max_tokens=20, temperature=0, stop=[stop])
    assert r.choices[0].text == full[: full.find(stop)] and r.choices[0].finish_reason == "stop"


def test_embeddings_minilm_equal_sentence_transformers(client):
    from sentence_transformers import SentenceTransformer

    from llmkit.hf.pipelines import resolve_model

    texts = ["A man is eating food.", "The stock market fell on Monday."]
    r = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)  # the client asks for base64 and decodes it
    ours = np.array([d.embedding for d in r.data])
    assert np.allclose(ours, SentenceTransformer(resolve_model("minilm"), device="cpu").encode(texts), atol=1e-5)
    assert r.usage.prompt_tokens > 0
    own = client.embeddings.create(model="tiny", input="def f(x)", encoding_format="float")
    assert len(own.data[0].embedding) == 64


@pytest.mark.parametrize(
    "call, error, text",
    [
        (lambda c: c.completions.create(model="nope", prompt="x"), openai.NotFoundError, "does not exist"),
        (lambda c: c.completions.create(model="tiny", prompt="x", max_tokens=100), openai.BadRequestError, "context window of 64 tokens"),
        (lambda c: c.completions.create(model="tiny", prompt="x", temperature=5), openai.BadRequestError, "'temperature' must be between"),
        (lambda c: c.chat.completions.create(model="tiny", messages=[]), openai.BadRequestError, "'messages' must be"),
        (lambda c: c.chat.completions.create(model="tiny", messages=[{"role": "wizard", "content": "x"}]), openai.BadRequestError, "needs a role"),
        (lambda c: c.embeddings.create(model="all-MiniLM-L6-v2", input=[]), openai.BadRequestError, "'input' must be"),
    ],
)
def test_errors_come_back_in_openais_shape(client, call, error, text):
    with pytest.raises(error) as e:
        call(client)
    assert text in e.value.message
    assert set(e.value.body) >= {"message", "type", "param", "code"}  # the client found OpenAI's error object


def test_auth_and_raw_http_errors(served):
    server, _ = served
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    r = httpx.get(server.url + "/v1/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    auth = {"Authorization": f"Bearer {KEY}"}
    for body, status in ((b"{not json", 400), (b"[1, 2]", 400), (json.dumps({"model": "tiny", "prompt": 5}).encode(), 400),
                         (json.dumps({"model": "tiny", "prompt": "x", "stream": "yes"}).encode(), 400),
                         (json.dumps({"model": "tiny", "prompt": "x", "n": 0}).encode(), 400)):
        r = httpx.post(server.url + "/v1/completions", content=body, headers=auth)
        assert r.status_code == status and set(r.json()["error"]) == {"message", "type", "param", "code"}, r.text
    assert httpx.get(server.url + "/health").json()["status"] == "ok"  # no key needed outside /v1
    r = httpx.get(server.url + "/v1/nothing", headers=auth)
    assert r.status_code == 404 and "error" in r.json()


def test_a_full_queue_answers_429_with_retry_after(tmp_path):
    from llmkit.serve.engine import SamplingParams

    model = load_served_model(tiny_run(tmp_path / "small", context_length=256), device="cpu", max_batch=1, max_queue=1)
    with ServerThread(create_app([model])) as server:
        running = model.engine.submit([1, 2, 3], SamplingParams(max_tokens=250, temperature=0))
        assert running.get(timeout=30).kind == "text"  # it holds the only slot now
        busy = [running, model.engine.submit([1, 2, 3], SamplingParams(max_tokens=250, temperature=0))]  # and this one fills the queue
        r = httpx.post(server.url + "/v1/completions", json={"model": "small", "prompt": "The", "max_tokens": 5}, timeout=30)
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        assert r.json()["error"]["type"] == "rate_limit_error"
        for h in busy:
            h.cancel()
        assert busy[0].result().finish_reason in ("cancelled", "length")  # (it may have just finished)
        assert busy[1].result().finish_reason == "cancelled"
        r = httpx.post(server.url + "/v1/completions", json={"model": "small", "prompt": "The", "max_tokens": 5}, timeout=30)
        assert r.status_code == 200


def test_a_client_that_disconnects_mid_stream_frees_its_slot(tmp_path):
    model = load_served_model(tiny_run(tmp_path / "small", context_length=256), device="cpu", max_batch=1)
    with ServerThread(create_app([model])) as server:
        body = {"model": "small", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 200, "stream": True, "temperature": 0}
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=30) as r:
            for line in r.iter_lines():
                if line.startswith("data: ") and '"content": "' in line and '"content": ""' not in line:
                    break  # got the first piece of text: hang up
        deadline = time.monotonic() + 10
        while model.engine.load()["active"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert model.engine.load() == {"waiting": 0, "active": 0, "slots": 1}
        ok = httpx.post(server.url + "/v1/completions", json={"model": "small", "prompt": "x", "max_tokens": 3}, timeout=30)
        assert ok.status_code == 200


def test_llmkit_serve_cli_answers_curl_style_requests(tmp_path):
    run = tiny_run(tmp_path / "mymodel")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llmkit.cli.main", "serve", str(run), "--port", str(port), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() is not None else "no start"
            time.sleep(0.2)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={"model": "mymodel", "prompt": "The", "max_tokens": 5, "temperature": 0})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 5
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert "serving mymodel" in out and "curl http://127.0.0.1" in out


def test_serve_cli_refuses_a_missing_model(tmp_path):
    r = subprocess.run([sys.executable, "-m", "llmkit.cli.main", "serve", str(tmp_path / "nope")], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "no such model directory" in r.stderr + r.stdout and "Traceback" not in r.stderr


def test_a_transformers_model_is_served_with_its_chat_template(tmp_path):
    """The chat-tuned run exported to transformers (Jinja chat template) and served as a
    transformers model answers what the llmkit run answers (same weights, greedy)."""
    from llmkit.chat import ChatTemplate
    from llmkit.hf.convert import export_model

    tok = ensure_chat_tokens(Tokenizer.train(TEXTS * 10, 300, pattern="gpt4"))
    run = tiny_run(tmp_path / "chatrun", tok, seed=4)
    (run / "model" / "chat_template.json").write_text(json.dumps(ChatTemplate(tok).describe()))
    hf_dir = export_model(run, tmp_path / "hfchat")
    ours = load_served_model(run, "ours", device="cpu")
    theirs = load_served_model(hf_dir, "theirs", device="cpu")
    assert theirs.kind == "transformers"
    messages = [{"role": "user", "content": "Hello there"}]
    assert theirs.chat_ids(messages) == ours.chat_ids(messages)
    with ServerThread(create_app([ours, theirs])) as server:
        c = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
        replies = [c.chat.completions.create(model=m, messages=messages, max_tokens=12, temperature=0) for m in ("ours", "theirs")]
        streamed = "".join(ch.choices[0].delta.content or "" for ch in
                           c.chat.completions.create(model="theirs", messages=messages, max_tokens=12, temperature=0, stream=True) if ch.choices)
    assert replies[0].choices[0].message.content == replies[1].choices[0].message.content == streamed
    assert replies[0].usage.prompt_tokens == replies[1].usage.prompt_tokens
