"""How much memory a model needs: to hold it for inference, and to train it (full or LoRA).

Inference is parameters x bytes per parameter. The course's numbers use decimal gigabytes
(1 GB = 1e9 bytes): a 3B model is 12 GB in fp32, 6 GB in fp16/bf16, 3 GB in int8, 1.5 GB in
int4 (GiB = 2**30 bytes are shown beside them; quantization scales are not counted).
Generating also keeps a KV cache (:func:`kv_cache_memory`): a key and a value per layer, KV
head and token, which grows with batch x context and for long contexts outweighs the weights.

Training adds, per *trainable* parameter: a gradient (in the weights' dtype), AdamW's two
moments in fp32 (8 bytes) and, when the weights are 16-bit, an fp32 master copy (4 bytes;
mixed precision as in ZeRO, Rajbhandari et al. 2020: 2 + 2 + 12 = 16 bytes per parameter).
With int8/int4 weights only LoRA training is possible (QLoRA): the base stays frozen and
quantized, the adapters and the activations are bf16.

Activations follow Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
Transformer Models", eq. 2): per layer ``s b h (34 + 5 a s / h)`` bytes in 16-bit, for
sequence length s, batch b, width h, a heads. The ``5 a s^2 b`` part is the stored attention
matrix; fused attention (SDPA / flash attention, what llmkit's GPT and transformers use by
default) never stores it, so it is dropped unless ``fused_attention=False``. 34 bytes in
16-bit are 17 stored values per token and hidden unit; scaled to the activation dtype.
Counting the tensors autograd saves in llmkit's GPT (fp32, ``saved_tensors_hooks``) gives
17.3 values per token and unit per layer, so the paper's constant is kept, uncalibrated.
On top of the layers: the logits (b s V values, kept in fp32 for the loss) and their gradient.
The sum is an upper-bound style estimate (gradients and activations do not all coexist, while
the allocator's temporaries add some); tests hold it within 25 % of measured peaks.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

GB = 1e9  # the course's (decimal) gigabyte
GIB = 2**30

DTYPE_BYTES: dict[str, float] = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5}
_DTYPE_ALIASES = {"float32": "fp32", "float": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}
OPTIMIZER_BYTES: dict[str, float] = {"adamw": 8.0, "adam": 8.0, "sgd": 0.0, "sgd-momentum": 4.0}
"""fp32 optimizer state per trainable parameter: Adam(W) keeps two moments, SGD with momentum one."""

_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?(?:e[+-]?\d+)?|\.\d+)\s*([kmbgt]?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """A parameter count from ``"3B"``, ``"124M"``, ``"1.5b"``, ``"7e9"``, ``"350m"``, ``"1200"``."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"cannot read {text!r} as a model size; write e.g. 3B, 124M, 1.5b or 7e9")
    n = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if not math.isfinite(n) or n < 1:
        raise ValueError(f"model size {text!r} must be at least one parameter")
    return round(n)


def normalize_dtype(dtype: str) -> str:
    d = _DTYPE_ALIASES.get(dtype.lower(), dtype.lower())
    if d not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_BYTES)}")
    return d


def dtype_bytes(dtype: str) -> float:
    """Bytes per parameter: fp32 4, fp16/bf16 2, int8 1, int4 0.5."""
    return DTYPE_BYTES[normalize_dtype(dtype)]


def inference_memory(n_params: int, dtype: str = "fp32") -> float:
    """Bytes to hold ``n_params`` weights in ``dtype`` (``/ GB`` for the course's gigabytes)."""
    if n_params < 0:
        raise ValueError(f"n_params must be >= 0, got {n_params}")
    return n_params * dtype_bytes(dtype)


# -- counting parameters from a configuration, without weights -----------------------------------
@dataclass(frozen=True)
class ModelShape:
    """What a config says about a model: its unique parameters and the dimensions that the
    activation estimate needs; ``linears`` are the (name, in, out) of the layers LoRA can adapt
    (every linear layer but the output head)."""

    n_params: int
    n_layer: int
    d_model: int
    n_head: int
    vocab: int
    source: str
    linears: tuple[tuple[str, int, int], ...] = ()
    n_kv_head: int = 0
    """Key/value heads (fewer than ``n_head`` with grouped-query attention); 0: ``n_head``."""
    head_dim: int = 0
    """Width of one head; 0: ``d_model // n_head``."""
    sliding_layers: int = 0
    """Layers with sliding-window attention: their KV cache holds at most ``sliding_window`` tokens."""
    sliding_window: int = 0

    def kv_cache(self, *, batch: int, seq: int, dtype: str = "fp16") -> float:
        """Bytes of the KV cache for ``batch`` sequences of ``seq`` tokens (see :func:`kv_cache_memory`)."""
        return kv_cache_memory(batch=batch, seq=seq, n_layer=self.n_layer, n_kv_head=self.n_kv_head or self.n_head,
                               head_dim=self.head_dim or self.d_model // max(1, self.n_head), dtype=dtype,
                               sliding_layers=self.sliding_layers, sliding_window=self.sliding_window)

    def lora_parameters(self, rank: int, targets: Sequence[str] | None = None) -> int:
        """``rank * (in + out)`` summed over the adapted layers (all, or those whose names end
        in one of ``targets``, PEFT's suffix rule)."""
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        from llmkit.models.lora import matches_targets

        chosen = [(i, o) for n, i, o in self.linears if matches_targets(n, targets)]
        if not chosen:
            raise ValueError(f"no linear layer matches the LoRA targets {list(targets or [])}")
        return lora_parameters(chosen, rank)


def kv_cache_memory(*, batch: int, seq: int, n_layer: int, n_kv_head: int, head_dim: int, dtype: str = "fp16",
                    sliding_layers: int = 0, sliding_window: int = 0) -> float:
    """Bytes generation keeps for attention: a key and a value vector per layer, KV head and
    token, ``2 * n_layer * batch * seq * n_kv_head * head_dim`` values. Values are in the
    compute dtype: fp32 4 bytes, otherwise 2 (int8/int4 weights still compute in 16-bit).
    ``sliding_layers`` of the layers keep at most ``sliding_window - 1`` tokens (a new token
    sees itself and the window's other tokens; transformers' cache keeps just those)."""
    for name, v in (("batch", batch), ("seq", seq), ("n_layer", n_layer), ("n_kv_head", n_kv_head), ("head_dim", head_dim)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    value_bytes = 4.0 if normalize_dtype(dtype) == "fp32" else 2.0
    sliding = min(max(sliding_layers, 0), n_layer) if sliding_window > 0 else 0
    tokens = (n_layer - sliding) * seq + sliding * min(seq, max(1, sliding_window - 1))
    return 2.0 * batch * tokens * n_kv_head * head_dim * value_bytes


def lora_parameters(shapes: Iterable[tuple[int, int]], rank: int) -> int:
    """Trainable numbers of rank-``rank`` adapters on layers of (in, out) shapes: r (in + out) each."""
    return sum(rank * (i + o) for i, o in shapes)


def _read_config(config) -> dict | object:
    """A dict, a transformers config, or a path to config.json / a directory holding one."""
    if isinstance(config, (str, os.PathLike)):
        p = Path(config)
        p = p / "config.json" if p.is_dir() else p
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such config file")
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{p} is not valid JSON ({e.msg} at line {e.lineno})") from None
    return config


def _linears(model, skip) -> tuple[tuple[str, int, int], ...]:
    """(name, in, out) of every nn.Linear and transformers Conv1D (weight (in, out)) but ``skip``."""
    from torch import nn

    out = []
    for name, mod in model.named_modules():
        w = getattr(mod, "weight", None)
        if mod is skip or w is None or getattr(w, "ndim", 0) != 2:
            continue
        if isinstance(mod, nn.Linear):
            out.append((name, mod.in_features, mod.out_features))
        elif type(mod).__name__ == "Conv1D":
            out.append((name, w.shape[0], w.shape[1]))
    return tuple(out)


def _shape_of(model, cfg, source: str, head) -> ModelShape:
    g = (lambda *names: next((int(getattr(cfg, n)) for n in names if getattr(cfg, n, None) is not None), 0))
    layer_types = list(getattr(cfg, "layer_types", None) or [])
    return ModelShape(
        n_kv_head=g("num_key_value_heads"),
        head_dim=g("head_dim"),
        sliding_layers=sum(t == "sliding_attention" for t in layer_types),
        sliding_window=g("sliding_window") if layer_types else 0,
        n_params=sum(p.numel() for p in model.parameters()),  # parameters() yields a tied one once
        n_layer=g("num_hidden_layers", "n_layer"),
        d_model=g("hidden_size", "n_embd", "d_model"),
        n_head=g("num_attention_heads", "n_head"),
        vocab=g("vocab_size"),
        source=source,
        linears=_linears(model, head),
    )


def _llmkit_shape(section: dict) -> ModelShape:
    import torch

    from llmkit.models.zoo import COUNTED_KINDS, MODEL_KINDS

    kind = section.get("kind")
    if kind not in MODEL_KINDS or kind in COUNTED_KINDS:
        raise ValueError(f"llmkit config of kind {kind!r} has no neural parameters to count")
    k = MODEL_KINDS[kind]
    try:
        cfg = k.config_cls(**section.get("config", {}))
    except TypeError as e:
        raise ValueError(f"llmkit config is corrupt ({e})") from None
    with torch.device("meta"):
        model = k.model_cls(cfg)
    return _shape_of(model, cfg, f"llmkit {kind}", getattr(model, "lm_head", None))


def _transformers_shape(cfg_dict: dict) -> ModelShape:
    import transformers

    model_type = cfg_dict.get("model_type")
    if not model_type:
        raise ValueError("config has neither a 'model_type' (transformers) nor an 'llmkit' section")
    try:
        cfg = transformers.AutoConfig.for_model(**cfg_dict)
    except (ValueError, KeyError) as e:
        raise ValueError(f"transformers cannot read this config ({str(e).splitlines()[0][:120]})") from None
    return transformers_shape(cfg)


def transformers_shape(cfg) -> ModelShape:
    """Shape of the model a transformers config describes, built on the meta device (no memory,
    no weights): the class its ``architectures`` names, else a causal LM, else the bare model."""
    import torch
    import transformers

    builders = [getattr(transformers, a) for a in (getattr(cfg, "architectures", None) or []) if hasattr(transformers, a)]
    builders += [transformers.AutoModelForCausalLM, transformers.AutoModel]
    for b in builders:
        try:
            with torch.device("meta"):
                model = b.from_config(cfg) if hasattr(b, "from_config") else b(cfg)
        except (ValueError, KeyError):
            continue
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        return _shape_of(model, cfg, f"transformers {type(model).__name__}", head)
    raise ValueError(f"transformers has no model class for model_type {cfg.model_type!r}")


def model_shape(config) -> ModelShape:
    """:class:`ModelShape` of a config: a path (config.json or its directory), a dict or a
    transformers ``PretrainedConfig``. A config with an ``llmkit`` section (a model directory
    llmkit wrote) is built by llmkit's zoo; any other by transformers. Always on the meta
    device: no weights are read or allocated."""
    cfg = _read_config(config)
    if not isinstance(cfg, dict):
        return transformers_shape(cfg)
    if "llmkit" in cfg:
        return _llmkit_shape(cfg["llmkit"])
    return _transformers_shape(cfg)


def count_parameters_from_config(config) -> int:
    """Unique parameters (tied ones once) of the model ``config`` describes; see :func:`model_shape`."""
    return model_shape(config).n_params


# -- training -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingMemory:
    """Bytes of one training setup, by what holds them (``total`` sums them)."""

    weights: float
    gradients: float
    optimizer: float
    master_weights: float
    activations: float
    trainable: int
    method: str  # "full" or "lora"

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.master_weights + self.activations

    def parts(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("trainable", "method")}


def activation_memory(
    *, batch: int, seq: int, n_layer: int, d_model: int, n_head: int = 1, vocab: int = 0, act_bytes: float = 4.0, fused_attention: bool = True
) -> float:
    """Korthikanti et al. 2022 per layer, ``b s (34 h + 5 a s)`` bytes in 16-bit, scaled by
    ``act_bytes / 2`` (the attention term only without fused attention), times the layers; plus
    the fp32 logits ``b s V`` and their gradient (``2 * 4 b s V`` bytes)."""
    for name, v in (("batch", batch), ("seq", seq), ("n_layer", n_layer), ("d_model", d_model)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    attn = 0 if fused_attention else 5 * n_head * seq
    per_layer = batch * seq * (34 * d_model + attn) * act_bytes / 2
    return n_layer * per_layer + 2 * 4.0 * batch * seq * vocab


def training_memory(
    n_params: int,
    *,
    dtype: str = "fp32",
    optimizer: str = "adamw",
    lora_params: int | None = None,
    batch: int = 1,
    seq: int = 1024,
    n_layer: int | None = None,
    d_model: int | None = None,
    n_head: int = 1,
    vocab: int = 0,
    fused_attention: bool = True,
) -> TrainingMemory:
    """Memory to train ``n_params`` weights stored in ``dtype``: full fine-tuning, or LoRA when
    ``lora_params`` (its trainable count) is given. Activations need ``n_layer`` and ``d_model``
    (from a config: :func:`model_shape`); without them they are counted as 0."""
    dtype = normalize_dtype(dtype)
    if optimizer not in OPTIMIZER_BYTES:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZER_BYTES)}")
    quantized = DTYPE_BYTES[dtype] < 2
    if quantized and lora_params is None:
        raise ValueError(f"{dtype} weights cannot be trained directly; give lora_params (QLoRA) or use fp32/fp16/bf16")
    if lora_params is not None and lora_params < 0:
        raise ValueError(f"lora_params must be >= 0, got {lora_params}")
    trainable = n_params if lora_params is None else lora_params
    train_bytes = 2.0 if quantized else DTYPE_BYTES[dtype]  # QLoRA trains bf16 adapters
    act_bytes = 2.0 if quantized else DTYPE_BYTES[dtype]
    acts = 0.0
    if n_layer and d_model:
        acts = activation_memory(batch=batch, seq=seq, n_layer=n_layer, d_model=d_model, n_head=n_head, vocab=vocab, act_bytes=act_bytes, fused_attention=fused_attention)
    return TrainingMemory(
        weights=inference_memory(n_params, dtype) + (trainable * train_bytes if lora_params is not None else 0.0),
        gradients=trainable * train_bytes,
        optimizer=trainable * OPTIMIZER_BYTES[optimizer],
        master_weights=trainable * 4.0 if train_bytes == 2 else 0.0,
        activations=acts,
        trainable=trainable,
        method="full" if lora_params is None else "lora",
    )
