"""The remote backends of :mod:`llmkit.backends`: an OpenAI-compatible HTTP server (plain
``urllib``) and Hugging Face's ``InferenceClient``. Same interface and error rules as the
local ones: bad input is a ``ValueError``, an unreachable or failing server a one-line
``OSError``; keys and tokens never appear in a repr or an error message."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence

from llmkit.backends import Backend, Messages, _check_texts, _one_line, cut_at_stop

__all__ = ["HFInferenceBackend", "OpenAIBackend"]


# --------------------------------------------------------------------------- OpenAI-compatible HTTP


class OpenAIBackend(Backend):
    """An OpenAI-compatible server at ``base_url`` (with or without a trailing ``/v1``).
    The API key comes from ``api_key`` or ``OPENAI_API_KEY``, is sent as
    ``Authorization: Bearer ...`` and never appears in a repr or an error message."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 30):
        url = base_url.rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if not model:
            raise ValueError("an OpenAI-compatible backend needs a model name")
        self.base_url = url[:-3] if url.endswith("/v1") else url
        self.model = model
        self.timeout = timeout
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY")

    def __repr__(self) -> str:
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r})"

    def _post(self, path: str, body: dict) -> dict:
        url = f"{self.base_url}/v1/{path}"
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise OSError(f"{url} answered HTTP {e.code}: {_http_error_message(e)}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise OSError(f"cannot reach the OpenAI-compatible server at {url}: {_one_line(reason)}") from None
        except ValueError:
            raise OSError(f"{url} answered with something that is not JSON") from None

    def _sampling(self, max_new_tokens: int = 64, temperature: float = 0.0, top_k: int | None = None, top_p: float = 1.0,
                  seed: int | None = None, stop=None) -> dict:
        from llmkit.generation import check_sampling

        check_sampling(temperature, top_k, top_p)
        body = {"model": self.model, "max_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
        extra = {"top_k": top_k, "seed": seed, "stop": [stop] if isinstance(stop, str) else stop}  # top_k: vLLM/llama.cpp/Ollama
        return body | {k: v for k, v in extra.items() if v is not None}

    def generate(self, prompt: str, **sampling) -> str:
        reply = self._post("completions", self._sampling(**sampling) | {"prompt": prompt})
        return cut_at_stop(_field(reply, "completions", lambda r: r["choices"][0]["text"]), sampling.get("stop"))  # for servers that ignore stop

    def chat(self, messages: Messages, **sampling) -> str:
        reply = self._post("chat/completions", self._sampling(**sampling) | {"messages": [dict(m) for m in messages]})
        return cut_at_stop(_field(reply, "chat/completions", lambda r: r["choices"][0]["message"]["content"] or ""), sampling.get("stop"))

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        reply = self._post("embeddings", {"model": self.model, "input": _check_texts(texts)})
        rows = _field(reply, "embeddings", lambda r: sorted(r["data"], key=lambda d: d.get("index", 0)))
        return [[float(v) for v in d["embedding"]] for d in rows]


def _http_error_message(e: urllib.error.HTTPError) -> str:
    """The server's ``{"error": {"message": ...}}`` (or ``{"error": "..."}``), else the reason."""
    try:
        err = json.loads(e.read() or b"{}").get("error")
    except (ValueError, AttributeError, OSError):
        err = None
    msg = err.get("message") if isinstance(err, dict) else err
    return _one_line(msg or e.reason)


def _field(reply: dict, endpoint: str, get):
    try:
        return get(reply)
    except (KeyError, IndexError, TypeError):
        raise OSError(f"unexpected answer from /v1/{endpoint}: {_one_line(json.dumps(reply), 200)}") from None


# --------------------------------------------------------------------------- Hugging Face InferenceClient


class HFInferenceBackend(Backend):
    """Hugging Face's ``InferenceClient`` for ``model``; the token is ``token`` or the
    ``HF_TOKEN`` environment variable (never put it in code). ``base_url`` points the client
    at a given endpoint (a TGI or OpenAI-compatible server) instead of ``model``."""

    def __init__(self, model: str | None, token: str | None = None, *, base_url: str | None = None, timeout: float | None = None):
        from huggingface_hub import InferenceClient

        if not model and not base_url:
            raise ValueError("HFInferenceBackend needs a model id or a base_url")
        self.model = model
        target = {"base_url": base_url} if base_url else {"model": model}
        self.client = InferenceClient(**target, token=token or os.environ.get("HF_TOKEN"), timeout=timeout)

    def __repr__(self) -> str:
        return f"HFInferenceBackend(model={self.model!r})"

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, TypeError, NotImplementedError):
            raise
        except Exception as e:  # the client raises httpx/requests/hub errors: one line for the user
            raise OSError(f"Hugging Face inference ({what}) for {self.model or self.client.model!r} failed: {_one_line(e)}") from None

    @staticmethod
    def _opts(max_new_tokens: int = 64, temperature: float = 0.0, top_k: int | None = None, top_p: float = 1.0,
              seed: int | None = None, stop=None) -> dict:
        from llmkit.generation import check_sampling

        check_sampling(temperature, top_k, top_p)
        stops = [stop] if isinstance(stop, str) else (list(stop) if stop else None)
        return {"temperature": temperature, "top_p": top_p, "seed": seed, "stop": stops, "_max": max_new_tokens, "_top_k": top_k}

    def generate(self, prompt: str, **sampling) -> str:
        o = self._opts(**sampling)
        text = self._call("text_generation", self.client.text_generation, prompt, max_new_tokens=o["_max"], do_sample=o["temperature"] > 0,
                          temperature=o["temperature"] or None, top_k=o["_top_k"], top_p=o["top_p"] if o["top_p"] < 1 else None,
                          seed=o["seed"], stop=o["stop"])
        return cut_at_stop(text, o["stop"])

    def chat(self, messages: Messages, **sampling) -> str:
        o = self._opts(**sampling)
        out = self._call("chat_completion", self.client.chat_completion, [dict(m) for m in messages], model=self.model,
                         max_tokens=o["_max"], temperature=o["temperature"], top_p=o["top_p"], seed=o["seed"], stop=o["stop"])
        return cut_at_stop(out.choices[0].message.content or "", o["stop"])

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        rows = [self._call("feature_extraction", self.client.feature_extraction, t) for t in _check_texts(texts)]
        return [[float(v) for v in (r[0] if getattr(r, "ndim", 1) == 2 else r)] for r in rows]
