"""The model zoo: build any model by kind and preset, save and load model directories.

A model directory is ``config.json`` + ``model.safetensors``. For a GPT whose configuration
GPT-2 can express, both files use Hugging Face's GPT-2 layout (``model_type: gpt2``,
``Conv1D`` weights stored input-major), so ``transformers.AutoModelForCausalLM`` loads it with
the same logits. Every config.json also carries an ``llmkit`` section naming the kind and
our own config, which is what :func:`load_model` reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from llmkit._io import atomic_write_text, atomic_write_with, read_json, refuse_overwrite
from llmkit.models.baselines import LSTMLM, NPLM
from llmkit.models.bert import Bert
from llmkit.models.config import (
    BertConfig,
    GPTConfig,
    LSTMConfig,
    NGramConfig,
    NPLMConfig,
    bert_preset,
    gpt_preset,
    lstm_preset,
    ngram_preset,
    nplm_preset,
)
from llmkit.models.gpt import GPT, conv1d_transposed, fuse_qkv_state, split_qkv_state
from llmkit.models.ngram import NGramLM

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class ModelKind:
    """How to make one kind of model: its class, config class and preset function."""

    name: str
    model_cls: Callable[..., torch.nn.Module]
    config_cls: type
    preset: Callable[..., object]


MODEL_KINDS: dict[str, ModelKind] = {
    k.name: k
    for k in (
        ModelKind("gpt", GPT, GPTConfig, gpt_preset),
        ModelKind("bert", Bert, BertConfig, bert_preset),
        ModelKind("lstm", LSTMLM, LSTMConfig, lstm_preset),
        ModelKind("nplm", NPLM, NPLMConfig, nplm_preset),
        ModelKind("ngram", NGramLM, NGramConfig, ngram_preset),
    )
}
# Trained by counting, not by gradient descent; saved as count arrays (see save_counted).
COUNTED_KINDS = frozenset({"ngram"})


def register(kind: ModelKind) -> None:
    MODEL_KINDS[kind.name] = kind


def _kind(name: str) -> ModelKind:
    if name not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {name!r}; choose one of {', '.join(MODEL_KINDS)}")
    return MODEL_KINDS[name]


def build_model(kind: str, preset: str = "tiny", **overrides) -> torch.nn.Module:
    """``build_model("gpt", "tiny", vocab_size=8192)``."""
    k = _kind(kind)
    return k.model_cls(k.preset(preset, **overrides))


def kind_of(model: torch.nn.Module) -> str:
    for k in MODEL_KINDS.values():
        if isinstance(model, k.model_cls):  # type: ignore[arg-type]
            return k.name
    raise ValueError(f"{type(model).__name__} is not a model of the zoo")


def _gpt2_compatible(c: GPTConfig) -> bool:
    return c.bias and c.qkv_bias


def _hf_gpt2_config(c: GPTConfig) -> dict:
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": c.vocab_size,
        "n_positions": c.context_length,
        "n_ctx": c.context_length,
        "n_embd": c.n_embd,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": c.layer_norm_eps,
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.dropout,
        "tie_word_embeddings": c.tie_weights,
        "torch_dtype": "float32",
    }


def save_model(model: torch.nn.Module, directory: str | os.PathLike, *, overwrite: bool = False, extra: dict | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (each atomically)."""
    d = Path(directory)
    refuse_overwrite([d / CONFIG_FILE, d / WEIGHTS_FILE], overwrite)
    kind = kind_of(model)
    cfg = model.config
    if kind == "gpt" and cfg.tie_weights and model.lm_head.weight is not model.transformer.wte.weight:
        cfg = replace(cfg, tie_weights=False)  # untied since it was built (e.g. a merged LoRA head): say so
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    config: dict = {}
    if kind == "gpt" and cfg.split_qkv:
        sd = fuse_qkv_state(sd)  # files always hold the fused (GPT-2) layout
    if kind == "gpt" and _gpt2_compatible(cfg):
        config = _hf_gpt2_config(cfg)
        sd = conv1d_transposed(sd)
    for k in _shared_names(model):
        sd.pop(k, None)  # a tied head is stored once, under the embedding's name
    config["llmkit"] = {"kind": kind, "config": asdict(cfg), **(extra or {})}
    atomic_write_with(d / WEIGHTS_FILE, lambda tmp: save_file({k: v.clone() for k, v in sd.items()}, tmp, metadata={"format": "pt"}))
    atomic_write_text(d / CONFIG_FILE, json.dumps(config, indent=2))
    return d


def read_model_config(directory: str | os.PathLike) -> dict:
    d = Path(directory)
    config = read_json(d / CONFIG_FILE, missing=f"{d} is not a model directory: missing {CONFIG_FILE}")
    if "llmkit" not in config:
        raise ValueError(f"{d / CONFIG_FILE} was not written by llmkit (no 'llmkit' section)")
    return config


COUNTS_FILE = "counts.safetensors"


def save_counted(model: torch.nn.Module, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """An n-gram model is its statistics: ``config.json`` + ``counts.safetensors`` (the
    sorted count arrays of every order), each written atomically."""
    from safetensors.numpy import save_file as save_numpy

    d = Path(directory)
    refuse_overwrite([d / CONFIG_FILE, d / COUNTS_FILE], overwrite)
    arrays = model.to_arrays()
    atomic_write_with(d / COUNTS_FILE, lambda tmp: save_numpy(arrays, str(tmp)))
    config = {"llmkit": {"kind": kind_of(model), "config": asdict(model.config)}}
    atomic_write_text(d / CONFIG_FILE, json.dumps(config, indent=2))
    return d


def load_model(directory: str | os.PathLike, map_location: str = "cpu") -> torch.nn.Module:
    """Rebuild the model a directory describes and load its weights."""
    d = Path(directory)
    meta = read_model_config(d)["llmkit"]
    try:
        k = _kind(meta["kind"])
        model = k.model_cls(k.config_cls(**meta["config"]))
    except (KeyError, TypeError) as e:
        raise ValueError(f"{d / CONFIG_FILE} is corrupt (bad or missing field {e})") from None
    if meta["kind"] in COUNTED_KINDS:
        from safetensors.numpy import load_file as load_numpy

        try:
            return model.load_arrays(load_numpy(str(d / COUNTS_FILE)))
        except FileNotFoundError:
            raise FileNotFoundError(f"{d} has no {COUNTS_FILE}") from None
        except ValueError:
            raise
        except Exception as e:
            raise ValueError(f"{d / COUNTS_FILE} is corrupt or truncated ({str(e).splitlines()[0][:100]})") from None
    try:
        sd = load_file(d / WEIGHTS_FILE, device=map_location)
    except FileNotFoundError:
        raise FileNotFoundError(f"{d} has no {WEIGHTS_FILE}") from None
    except Exception as e:  # safetensors raises its own error type for truncated or corrupt files
        raise ValueError(f"{d / WEIGHTS_FILE} is corrupt or truncated ({str(e).splitlines()[0][:100]})") from None
    if meta["kind"] == "gpt" and _gpt2_compatible(model.config):
        sd = conv1d_transposed(sd)
    if meta["kind"] == "gpt" and model.config.split_qkv:
        sd = split_qkv_state(sd)
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:
        detail = [ln.strip() for ln in str(e).splitlines() if ln.strip()][-1][:120]
        raise ValueError(f"{d / WEIGHTS_FILE} does not fit {d / CONFIG_FILE} ({detail})") from None
    missing = [m for m in missing if m not in _shared_names(model)]  # tied: loaded via its twin
    if missing or unexpected:
        raise ValueError(f"{d / WEIGHTS_FILE} does not fit the config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.eval()


def _shared_names(model: torch.nn.Module) -> set[str]:
    """State-dict names of parameters that are another parameter (weight tying)."""
    unique = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    return set(model.state_dict()) - unique
