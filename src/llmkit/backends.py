"""One generate/chat/embed interface over four kinds of inference backend.

- :class:`LlmkitBackend`: an llmkit run or model directory (``load_pretrained``).
- :class:`TransformersBackend`: a transformers causal LM (local directory or hub id).
- :class:`~llmkit.remote_backends.OpenAIBackend`: any OpenAI-compatible HTTP server (Ollama,
  vLLM, llama.cpp's server, ``llmkit serve``), spoken to with plain ``urllib`` (no extra dependency).
- :class:`~llmkit.remote_backends.HFInferenceBackend`: Hugging Face's ``InferenceClient`` (token
  from ``HF_TOKEN``).

The two remote ones live in :mod:`llmkit.remote_backends` and are importable from here too.

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
    from llmkit.remote_backends import HFInferenceBackend, OpenAIBackend

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


def __getattr__(name: str):
    """The remote backends live in :mod:`llmkit.remote_backends`; they are importable from here too."""
    if name in ("OpenAIBackend", "HFInferenceBackend"):
        from llmkit import remote_backends

        return getattr(remote_backends, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
