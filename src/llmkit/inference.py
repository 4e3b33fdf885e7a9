"""Load a trained model with its tokenizer, and look inside it (attention weights).

``load_pretrained(path)`` accepts a run directory (``RUN/``, using ``RUN/model``) or a model
directory (``config.json`` + weights + tokenizer files), as ``llmkit train`` writes them.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from llmkit.models.zoo import load_model, read_model_config
from llmkit.tokenizer import Tokenizer


def model_dir(path: str | os.PathLike) -> Path:
    """``RUN/model`` for a run directory, else ``path`` itself (checked)."""
    p = Path(path)
    if (p / "model" / "config.json").is_file():
        return p / "model"
    if (p / "config.json").is_file():
        return p
    raise FileNotFoundError(f"{p} is neither a run directory (with model/) nor a model directory (with config.json)")


def load_pretrained(path: str | os.PathLike) -> tuple[torch.nn.Module, Tokenizer, str]:
    """``(model in eval mode, its tokenizer, its kind)``."""
    d = model_dir(path)
    kind = read_model_config(d)["llmkit"]["kind"]
    return load_model(d), Tokenizer.load(d), kind


def attention_map(model: torch.nn.Module, tokenizer: Tokenizer, text: str, layer: int, head: int) -> tuple[torch.Tensor, list[str]]:
    """The (T, T) attention weights of ``head`` in ``layer`` for ``text``, and the token
    pieces that label its rows and columns. Rows are queries, columns keys."""
    from llmkit.tokenizer.display import token_pieces

    if not hasattr(model, "attention_weights"):
        raise ValueError(f"{type(model).__name__} has no attention to show (only gpt and bert do)")
    ids = tokenizer.encode(text)
    if not ids:
        raise ValueError("the text is empty")
    limit = getattr(model.config, "context_length", len(ids))
    ids = ids[:limit]
    n_layer, n_head = model.config.n_layer, model.config.n_head
    if not 0 <= layer < n_layer or not 0 <= head < n_head:
        raise ValueError(f"the model has layers 0-{n_layer - 1} and heads 0-{n_head - 1}; got layer {layer}, head {head}")
    weights = model.attention_weights(torch.tensor([ids]))  # per layer: (1, H, T, T)
    return weights[layer][0, head], token_pieces(tokenizer, ids)
