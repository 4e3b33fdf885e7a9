"""The web page ``GET /`` in a real headless Chromium (Debian's ``chromium``, driven by
Playwright's Python package): send a chat message and see the streamed reply, the token view,
the attention heatmap; a screenshot is taken. Skipped where no Chromium is installed (CI
installs it: see .ci/run)."""

from __future__ import annotations

import os
import shutil

import httpx
import pytest

from llmkit.chat import ensure_chat_tokens
from llmkit.serve.app import create_app
from llmkit.serve.models import load_served_model
from llmkit.tokenizer import Tokenizer
from serve_testutils import TEXTS, ServerThread, tiny_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tok = ensure_chat_tokens(Tokenizer.train(TEXTS * 10, 300, pattern="gpt4"))
    model = load_served_model(tiny_run(tmp_path_factory.mktemp("page") / "chatty", tok, seed=2), device="cpu", max_batch=2)
    with ServerThread(create_app([model], api_key="pagekey")) as s:
        yield s, model


def test_page_api_tokenize_and_attention(server):
    s, model = server
    auth = {"Authorization": "Bearer pagekey"}
    page = httpx.get(s.url + "/")
    assert page.status_code == 200 and "<title>llmkit</title>" in page.text and "http" not in page.text.split("<script>")[1].replace("HTTP ", "")
    r = httpx.post(s.url + "/api/tokenize", json={"model": "chatty", "text": "Hello, world!"}, headers=auth).json()
    assert [t["id"] for t in r["tokens"]] == model.tokenizer.encode("Hello, world!")
    assert "".join(t["text"] for t in r["tokens"]) == "Hello, world!"
    a = httpx.post(s.url + "/api/attention", json={"model": "chatty", "text": "The quick brown fox"}, headers=auth).json()
    n = len(a["tokens"])
    assert len(a["weights"]) == n and all(abs(sum(row) - 1) < 1e-4 for row in a["weights"])  # each row is a distribution
    assert all(a["weights"][i][j] == 0 for i in range(n) for j in range(i + 1, n))  # causal: nothing from the future
    assert httpx.post(s.url + "/api/tokenize", json={"model": "chatty", "text": "x"}).status_code == 401
    assert httpx.post(s.url + "/api/attention", json={"model": "chatty", "text": ""}, headers=auth).status_code == 400


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (Debian: apt-get install chromium; .ci/run installs it)")
def test_chat_streams_in_a_real_browser(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    s, _ = server
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless=new"])
        try:
            page = browser.new_page()
            page.goto(s.url + "/")
            page.fill("#key", "pagekey")
            page.dispatch_event("#key", "change")
            page.wait_for_function("document.querySelector('#model').options.length > 0", timeout=15000)
            page.fill("#maxtok", "24")
            page.fill("#prompt", "Hello there")
            page.click("#send")
            page.wait_for_selector(".msg.assistant[data-done='1']", timeout=30000)
            reply = page.inner_text(".msg.assistant span")
            assert reply.strip() and page.inner_text("#error") == ""
            assert "generated" in page.inner_text("#usage")
            page.click("#tokbtn")
            page.wait_for_selector("#tokens .tok")
            assert page.locator("#tokens .tok").count() > 3
            page.click("#attbtn")
            page.wait_for_function("document.querySelector('#attinfo').textContent.includes('heads')", timeout=15000)
            shot = tmp_path / "page.png"  # (LLMKIT_SCREENSHOT=path keeps a copy)
            page.screenshot(path=str(shot), full_page=True)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000
            if os.environ.get("LLMKIT_SCREENSHOT"):
                shutil.copy(shot, os.environ["LLMKIT_SCREENSHOT"])
        finally:
            browser.close()
