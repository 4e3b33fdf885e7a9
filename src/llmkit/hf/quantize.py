"""Int8 dynamic quantization for CPU inference, and a before/after table (size, speed, perplexity).

Dynamic quantization (``torch.ao.quantization.quantize_dynamic``) stores every ``nn.Linear``
weight as int8 with one float scale per tensor and quantizes the activations on the fly at
each call; embeddings, LayerNorms and biases stay float32. It needs no calibration data and
runs on CPU only.

Hugging Face's GPT-2 implements its projections with ``transformers.pytorch_utils.Conv1D``
(a linear layer whose weight is stored transposed, ``(in, out)``), which ``quantize_dynamic``
does not know. :func:`quantize_dynamic_int8` therefore first swaps each ``Conv1D`` for an
equivalent ``nn.Linear`` (the weight transposed, the bias copied; the same function of the
input) so that every projection quantizes, not only ``lm_head``. Our GPT already uses
``nn.Linear`` with GPT-2's names.

A tied output head (``lm_head.weight is wte.weight``) is quantized as its own int8 copy while
the embedding stays float32, so a tied model shrinks less than 4x overall; the table says so
through its measured sizes rather than hiding it.

``torch.ao.quantization`` is deprecated upstream in favour of ``torchao``; it still ships with
PyTorch and needs no extra dependency, so we use it and silence its deprecation warnings here.
"""

from __future__ import annotations

import copy
import io
import math
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _conv1d_class() -> type | None:
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # transformers is optional for our own GPT
        return None
    return Conv1D


def conv1d_to_linear(model: nn.Module) -> nn.Module:
    """Replace every HF ``Conv1D`` (weight ``(in, out)``) in ``model`` with an ``nn.Linear``
    (weight ``(out, in)``) computing the same function, in place; returns ``model``."""
    conv1d = _conv1d_class()
    if conv1d is None:
        return model
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, conv1d):
                n_in, n_out = child.weight.shape
                lin = nn.Linear(n_in, n_out, bias=child.bias is not None)
                with torch.no_grad():
                    lin.weight.copy_(child.weight.t())
                    if child.bias is not None:
                        lin.bias.copy_(child.bias)
                setattr(parent, name, lin)
    return model


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """An int8 dynamically quantized copy of ``model`` (on CPU, eval mode); ``model`` is left
    as it was. Every ``nn.Linear`` (and every HF ``Conv1D``, converted first) quantizes."""
    from torch.ao.quantization import quantize_dynamic

    if any(p.is_meta for p in model.parameters()):
        raise ValueError("the model has no weights yet (meta tensors); load it before quantizing")
    q = conv1d_to_linear(copy.deepcopy(model).cpu().float().eval())
    if not any(isinstance(m, nn.Linear) for m in q.modules()):
        raise ValueError(f"{type(model).__name__} has no linear layers to quantize")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, UserWarning))
        return quantize_dynamic(q, {nn.Linear}, dtype=torch.qint8, inplace=True)


def model_size_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s serialized state dict (shared tensors once, int8 packed weights
    as they are stored). A measurement only: artefacts are saved as safetensors elsewhere."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(model.state_dict(), buf)
    return buf.tell()


def linear_weight_bytes(model: nn.Module) -> int:
    """Bytes of the weight matrices of the linear layers: float ``nn.Linear``/``Conv1D`` and
    dynamically quantized int8 ones (biases, embeddings and norms excluded)."""
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    conv1d = _conv1d_class()
    total = 0
    for m in model.modules():
        if isinstance(m, QLinear):
            w = m.weight()
            total += w.numel() * w.element_size()
        elif isinstance(m, nn.Linear) or (conv1d is not None and isinstance(m, conv1d)):
            total += m.weight.numel() * m.weight.element_size()
    return total


def eval_windows(tokens: np.ndarray, block: int, batches: int, batch_size: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``batches`` batches of ``batch_size`` consecutive, non-overlapping windows of ``block``
    inputs and their next-token targets, from the start of ``tokens``: deterministic."""
    if block < 1 or batches < 1 or batch_size < 1:
        raise ValueError(f"block, batches and batch_size must be >= 1, got {block}, {batches}, {batch_size}")
    need = batches * batch_size * block + 1
    if len(tokens) < need:
        raise ValueError(f"{batches} batches of {batch_size} x {block} tokens need {need} tokens; the data has {len(tokens)}")
    data = torch.from_numpy(np.asarray(tokens[:need], dtype=np.int64))
    out = []
    for b in range(batches):
        starts = [(b * batch_size + i) * block for i in range(batch_size)]
        x = torch.stack([data[s : s + block] for s in starts])
        y = torch.stack([data[s + 1 : s + block + 1] for s in starts])
        out.append((x, y))
    return out


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits (B, T, V) from our models (``(logits, loss)`` tuples) and transformers ones."""
    out = model(x)
    return out[0] if isinstance(out, tuple) else out.logits


@torch.no_grad()
def evaluate(model: nn.Module, windows: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
    """``(perplexity, tokens per second)`` of ``model`` on ``windows`` (one warm-up batch first)."""
    model.eval()
    _logits(model, windows[0][0])  # warm-up: first-call allocations and kernel selection
    nll, n = 0.0, 0
    t0 = time.perf_counter()
    for x, y in windows:
        logits = _logits(model, x).float()
        nll += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        n += y.numel()
    seconds = time.perf_counter() - t0
    return math.exp(nll / n), n / max(seconds, 1e-9)


def compare_quantized(model: nn.Module, val_tokens: np.ndarray, *, block: int = 128, batches: int = 4, batch_size: int = 4) -> list[dict]:
    """Rows ``{"metric", "fp32", "int8", "ratio"}`` for size (MB), linear weights (MB),
    forward tokens/s and perplexity of ``model`` and its int8 dynamic quantization, both on
    CPU and on the same windows. ``ratio`` is int8 / fp32."""
    ctx = getattr(getattr(model, "config", None), "context_length", None) or getattr(getattr(model, "config", None), "n_positions", None)
    if ctx is not None and block > ctx:
        raise ValueError(f"--block {block} is longer than the model's context length {ctx}")
    windows = eval_windows(val_tokens, block, batches, batch_size)
    base = copy.deepcopy(model).cpu().float().eval()
    quant = quantize_dynamic_int8(base)
    rows = []
    ppl_f, tps_f = evaluate(base, windows)
    ppl_q, tps_q = evaluate(quant, windows)
    measured = [
        ("size (MB)", model_size_bytes(base) / 1e6, model_size_bytes(quant) / 1e6),
        ("linear weights (MB)", linear_weight_bytes(base) / 1e6, linear_weight_bytes(quant) / 1e6),
        ("tokens/s", tps_f, tps_q),
        ("perplexity", ppl_f, ppl_q),
    ]
    for metric, f, q in measured:
        rows.append({"metric": metric, "fp32": f, "int8": q, "ratio": q / f if f else float("nan")})
    return rows
