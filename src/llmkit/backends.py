"""One generate/chat/embed interface over four kinds of inference backend.

- :class:`LlmkitBackend`: an llmkit run or model directory (``load_pretrained``).
- :class:`TransformersBackend`: a transformers causal LM (local directory or hub id).
- :class:`OpenAIBackend`: any OpenAI-compatible HTTP server (Ollama, vLLM, llama.cpp's
  server, ``llmkit serve``), spoken to with plain ``urllib`` (no extra dependency).
- :class:`HFInferenceBackend`: Hugging Face's ``InferenceClient`` (token from ``HF_TOKEN``).

:func:`open_backend` builds one from a spec string::

    llmkit:RUN_OR_MODEL_DIR           an llmkit run/model directory
    hf:PATH_OR_HUB_ID                 transformers (AutoModelForCausalLM + AutoTokenizer)
    openai:http://HOST:PORT[/v1]#MODEL  an OpenAI-compatible server and the model to ask for
    hf-inference:MODEL                Hugging Face InferenceClient
    DIR                               an existing directory: llmkit if config.json has an
                                      ``llmkit`` section, else transformers

Sampling arguments mean the same everywhere: ``temperature == 0`` is greedy, ``top_k=None``
and ``top_p=1.0`` keep every token, ``seed`` makes sampling repeatable where the backend
allows it, and ``stop`` (strings) cuts the reply before the first stop string.

Embeddings are mean-pooled last hidden states for local models (after the final layer
norm, as transformers' ``hidden_states[-1]`` is for GPT-2), and whatever the server
returns for remote ones. Errors for bad input are ``ValueError``; an unreachable or failing
server or model is a one-line ``OSError``.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

Messages = Sequence[Mapping]


def _one_line(text: object, limit: int = 300) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def cut_at_stop(text: str, stop: Sequence[str] | str | None) -> str:
    """``text`` up to (not including) the earliest of the ``stop`` strings."""
    if not stop:
        return text
    stops = [stop] if isinstance(stop, str) else list(stop)
    cuts = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return text[: min(cuts)] if cuts else text


def plain_chat_prompt(messages: Messages) -> str:
    """A conversation as plain text for a model without a chat template:
    ``role: content`` lines, then ``assistant:`` for the model to continue."""
    lines = [f"{m['role']}: {m.get('content') or ''}" for m in messages]
    return "\n".join([*lines, "assistant:"])


class Backend(ABC):
    """What every backend offers. ``chat`` takes OpenAI-style messages
    (``[{"role": "user", "content": "..."}]``) and returns the assistant's reply text."""

    @abstractmethod
    def generate(self, prompt: str, *, max_new_tokens: int = 64, temperature: float = 0.0, top_k: int | None = None,
                 top_p: float = 1.0, seed: int | None = None, stop: Sequence[str] | None = None) -> str:
        """The text generated after ``prompt`` (prompt not included)."""

    @abstractmethod
    def chat(self, messages: Messages, **sampling) -> str:
        """The assistant's next reply to ``messages``; ``sampling`` as for :meth:`generate`."""

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text."""
        raise NotImplementedError(f"{type(self).__name__} cannot embed texts")


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise ValueError("embed takes a list of strings, not one string")
    return list(texts)


# --------------------------------------------------------------------------- llmkit


class LlmkitBackend(Backend):
    """An llmkit GPT (generate, chat, embed) or BERT (embed only) from a run or model directory.

    Chat uses llmkit's chat template (and stops at its end tokens) when the tokenizer has
    the chat tokens, else :func:`plain_chat_prompt`."""

    def __init__(self, run_dir: str | os.PathLike):
        from llmkit.inference import load_pretrained

        self.model, self.tokenizer, self.kind = load_pretrained(run_dir)
        self.path = Path(run_dir)

    def _need_gpt(self, what: str) -> None:
        if self.kind != "gpt":
            raise NotImplementedError(f"an llmkit {self.kind} model cannot {what}; only a GPT can")

    def _continue(self, ids: list[int], stops: set[int], max_new_tokens: int = 64, temperature: float = 0.0,
                  top_k: int | None = None, top_p: float = 1.0, seed: int | None = None, stop=None) -> str:
        from llmkit.generation import generate

        out = generate(self.model, ids, max_new_tokens, stop_tokens=stops, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        return cut_at_stop(self.tokenizer.decode(out), stop)

    def generate(self, prompt: str, **sampling) -> str:
        from llmkit.generation import encode_prompt, default_stop_tokens

        self._need_gpt("generate text")
        return self._continue(encode_prompt(self.tokenizer, prompt), default_stop_tokens(self.tokenizer, None), **sampling)

    def chat(self, messages: Messages, **sampling) -> str:
        from llmkit.chat import ChatTemplate, has_chat_tokens

        self._need_gpt("chat")
        if not has_chat_tokens(self.tokenizer):
            return self.generate(plain_chat_prompt(messages), **sampling)
        template = ChatTemplate(self.tokenizer)
        return self._continue(template.prompt_ids(messages), template.stop_ids, **sampling)

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """GPT: mean over tokens of the final layer norm's output (the first
        ``context_length`` tokens). BERT: mean of ``Bert.encode`` over real tokens."""
        texts = _check_texts(texts)
        if self.kind == "bert":
            return self._embed_bert(texts)
        self._need_gpt("embed")
        return [self._embed_gpt(t) for t in texts]

    def _embed_gpt(self, text: str) -> list[float]:
        from llmkit.generation import encode_prompt

        device = next(self.model.parameters()).device
        ids = encode_prompt(self.tokenizer, text)[: self.model.config.context_length]
        seen: list[torch.Tensor] = []
        hook = self.model.transformer.ln_f.register_forward_hook(lambda _m, _i, out: seen.append(out))
        try:
            self.model(torch.tensor([ids], device=device))
        finally:
            hook.remove()
        return seen[0][0].float().mean(0).tolist()

    def _embed_bert(self, texts: list[str]) -> list[list[float]]:
        from llmkit.models.bert import encode_for_bert
        from llmkit.models.common import masked_mean

        device = next(self.model.parameters()).device
        enc = {k: v.to(device) for k, v in encode_for_bert(self.tokenizer, texts, max_length=self.model.config.context_length).items()}
        h = self.model.encode(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).float()
        return masked_mean(h, enc["attention_mask"]).tolist()


# --------------------------------------------------------------------------- transformers


class TransformersBackend(Backend):
    """A transformers model: a causal LM (generate, chat, embed) or an encoder such as
    all-MiniLM-L6-v2 (``hf:minilm``; embed only). ``device="auto"`` picks CUDA, then MPS, then
    the CPU. Chat uses the tokenizer's chat template when it has one, else
    :func:`plain_chat_prompt`."""

    def __init__(self, path_or_id: str | os.PathLike, device: str = "auto"):
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

        from llmkit.device import pick_device
        from llmkit.hf.pipelines import resolve_model

        self.device = str(pick_device(device))
        name = resolve_model(path_or_id)
        try:
            config = AutoConfig.from_pretrained(name)
            archs = getattr(config, "architectures", None) or []
            # An encoder checkpoint (BertModel, BertForMaskedLM...) has no causal head: loading
            # one as a causal LM would add a random head, so it is loaded bare, for embeddings.
            self.can_generate = not archs or any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
            self.tokenizer = AutoTokenizer.from_pretrained(name)
            auto = AutoModelForCausalLM if self.can_generate else AutoModel
            self.model = auto.from_pretrained(name).to(self.device).eval()
        except (OSError, ValueError) as e:
            raise OSError(f"cannot load the transformers model {str(path_or_id)!r}: {_one_line(e)}") from None
        self.name = str(path_or_id)

    def _need_generation(self) -> None:
        if not self.can_generate:
            raise ValueError(f"{self.name} is an encoder ({type(self.model).__name__}): it embeds texts but cannot generate; use embed()")

    @torch.no_grad()
    def _continue(self, ids: list[int], max_new_tokens: int = 64, temperature: float = 0.0, top_k: int | None = None,
                  top_p: float = 1.0, seed: int | None = None, stop=None) -> str:
        from llmkit.generation import check_sampling

        check_sampling(temperature, top_k, top_p)
        opts: dict = {"do_sample": False}
        if temperature > 0:
            opts = {"do_sample": True, "temperature": temperature, "top_k": top_k or 0, "top_p": top_p}
            if seed is not None:
                torch.manual_seed(seed)
        x = torch.tensor([ids], device=self.device)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.model.generation_config.eos_token_id
        pad = pad[0] if isinstance(pad, list) else pad
        out = self.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens, pad_token_id=pad, **opts)
        return cut_at_stop(self.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True), stop)

    def generate(self, prompt: str, **sampling) -> str:
        self._need_generation()
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError("empty prompt")
        return self._continue(ids, **sampling)

    def chat(self, messages: Messages, **sampling) -> str:
        self._need_generation()
        if not getattr(self.tokenizer, "chat_template", None):
            return self.generate(plain_chat_prompt(messages), **sampling)
        text = self.tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False, add_generation_prompt=True)
        return self._continue(self.tokenizer(text, add_special_tokens=False)["input_ids"], **sampling)

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Mean over the tokens of ``hidden_states[-1]``, one text at a time (no padding to get
        wrong for models with absolute positions). An encoder's text keeps its [CLS] and [SEP]
        (the mean sentence-transformers takes: for all-MiniLM-L6-v2 its embedding before
        normalisation); a causal LM's text is its own tokens."""
        out = []
        for text in _check_texts(texts):
            enc = self.tokenizer(text, add_special_tokens=not self.can_generate, truncation=True, return_tensors="pt").to(self.device)
            h = self.model(**enc, output_hidden_states=True).hidden_states[-1]
            out.append(h[0].float().mean(0).tolist())
        return out


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


# --------------------------------------------------------------------------- specs

SPEC_CHOICES = ("llmkit:RUN_DIR", "hf:PATH_OR_ID", "openai:http://HOST:PORT/v1#MODEL", "hf-inference:MODEL", "an existing directory")


def open_backend(spec: str) -> Backend:
    """A backend from a spec (see the module docstring for the syntax)."""
    if Path(spec).is_dir():
        return _open_dir(Path(spec))
    prefix, sep, rest = spec.partition(":")
    if not sep or prefix not in ("llmkit", "hf", "openai", "hf-inference"):
        raise ValueError(f"unknown backend spec {spec!r}; use one of: {', '.join(SPEC_CHOICES)}")
    if not rest:
        raise ValueError(f"backend spec {spec!r} names nothing after {prefix}:")
    if prefix == "llmkit":
        return LlmkitBackend(rest)
    if prefix == "hf":
        return TransformersBackend(rest)
    if prefix == "hf-inference":
        return HFInferenceBackend(rest)
    url, _, model = rest.partition("#")
    if not model:
        raise ValueError(f"an openai spec names its model after '#': openai:http://HOST:PORT/v1#MODEL, got {spec!r}")
    return OpenAIBackend(url, model)


def _open_dir(d: Path) -> Backend:
    """llmkit when the directory (or its ``model/``) holds an llmkit config.json, else transformers."""
    for config in (d / "model" / "config.json", d / "config.json"):
        if config.is_file():
            try:
                is_llmkit = "llmkit" in json.loads(config.read_text())
            except (ValueError, OSError):
                raise ValueError(f"{config} is not valid JSON") from None
            return LlmkitBackend(d) if is_llmkit else TransformersBackend(d)
    raise ValueError(f"{d} holds no config.json (nor model/config.json): not a model directory")
