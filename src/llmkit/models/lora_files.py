"""LoRA adapters in PEFT's file layout: ``adapter_config.json`` + ``adapter_model.safetensors``.

Keys are ``base_model.model.<module>.lora_A.weight`` / ``.lora_B.weight``; fully trained
modules such as a new classification head go under ``modules_to_save`` as
``base_model.model.<module>.<param>``. ``peft.PeftModel.from_pretrained`` loads what
:func:`save_adapter` writes, and :func:`load_adapter` loads what PEFT saves (tested both ways).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from llmkit._io import atomic_write_text, atomic_write_with, read_json, refuse_overwrite
from llmkit.models.lora import (
    LoRALinear,
    linear_layer_names,
    matches_targets,
    lora_modules,
    mark_trainable,
    replace_linear_with_lora,
    resolve_modules,
)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."


@dataclass
class AdapterConfig:
    """The fields of PEFT's ``LoraConfig`` that describe an adapter llmkit writes."""

    r: int
    lora_alpha: float
    target_modules: list[str]
    lora_dropout: float = 0.0
    modules_to_save: list[str] = field(default_factory=list)
    base_model_name_or_path: str | None = None
    task_type: str | None = None
    fan_in_fan_out: bool = False

    def to_peft_json(self) -> dict:
        return {
            "peft_type": "LORA",
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": self.lora_dropout,
            "target_modules": self.target_modules,
            "modules_to_save": self.modules_to_save or None,
            "base_model_name_or_path": self.base_model_name_or_path,
            "task_type": self.task_type,
            "fan_in_fan_out": self.fan_in_fan_out,
            "bias": "none",
            "inference_mode": True,
            "init_lora_weights": True,
            "use_rslora": False,
            "use_dora": False,
            "layers_to_transform": None,
            "layers_pattern": None,
            "rank_pattern": {},
            "alpha_pattern": {},
        }


def _target_names(model: nn.Module, wrapped: Sequence[str]) -> list[str]:
    """The shortest faithful ``target_modules``: the wrapped modules' last names when those
    select exactly the wrapped set among the model's Linear layers, else the full names."""
    leaves = sorted({n.rsplit(".", 1)[-1] for n in wrapped})
    candidates = {n for n, m in model.named_modules() if isinstance(m, (nn.Linear, LoRALinear)) and not n.endswith((".base_layer", ".lora_A", ".lora_B"))}
    selected = {n for n in candidates if matches_targets(n, leaves)}
    return leaves if selected == set(wrapped) else sorted(wrapped)


def adapter_state_dict(model: nn.Module, modules_to_save: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """PEFT's saved keys: ``base_model.model.<m>.lora_A.weight`` / ``.lora_B.weight`` for each
    LoRA layer and ``base_model.model.<m>.<param>`` for each module to save."""
    sd: dict[str, torch.Tensor] = {}
    for name, m in lora_modules(model).items():
        sd[f"{_PREFIX}{name}.lora_A.weight"] = m.lora_A.weight
        sd[f"{_PREFIX}{name}.lora_B.weight"] = m.lora_B.weight
    for name in resolve_modules(model, list(modules_to_save)):
        for pname, p in model.get_submodule(name).named_parameters():
            sd[f"{_PREFIX}{name}.{pname}"] = p
    return {k: v.detach().cpu().contiguous().clone() for k, v in sd.items()}


def save_adapter(
    model: nn.Module,
    directory: str | os.PathLike,
    *,
    modules_to_save: Sequence[str] = (),
    base_model_name_or_path: str | None = None,
    task_type: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the model's LoRA layers (and ``modules_to_save``) as a PEFT adapter directory.
    The weights saved are the unmerged A and B, whatever the merge state."""
    loras = lora_modules(model)
    if not loras:
        raise ValueError("the model has no LoRA layers to save (call replace_linear_with_lora first)")
    ranks = {(m.rank, m.alpha) for m in loras.values()}
    if len(ranks) != 1:
        raise ValueError(f"PEFT's layout needs one rank and alpha for all layers, found {sorted(ranks)}")
    (rank, alpha), = ranks
    drops = {m.lora_dropout.p if isinstance(m.lora_dropout, nn.Dropout) else 0.0 for m in loras.values()}
    if len(drops) != 1:
        raise ValueError(f"PEFT's layout needs one dropout for all layers, found {sorted(drops)}")
    d = Path(directory)
    refuse_overwrite([d / ADAPTER_CONFIG, d / ADAPTER_WEIGHTS], overwrite)
    cfg = AdapterConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=_target_names(model, list(loras)),
        lora_dropout=drops.pop(),
        modules_to_save=list(modules_to_save),
        base_model_name_or_path=base_model_name_or_path,
        task_type=task_type,
    )
    tensors = adapter_state_dict(model, modules_to_save)
    atomic_write_with(d / ADAPTER_WEIGHTS, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write_text(d / ADAPTER_CONFIG, json.dumps(cfg.to_peft_json(), indent=2))
    return d


def read_adapter_config(directory: str | os.PathLike) -> AdapterConfig:
    d = Path(directory)
    raw = read_json(d / ADAPTER_CONFIG, missing=f"{d} is not a LoRA adapter directory: missing {ADAPTER_CONFIG}")
    if raw.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{d / ADAPTER_CONFIG}: peft_type {raw.get('peft_type')!r} is not LORA")
    for unsupported in ("use_dora", "use_rslora"):
        if raw.get(unsupported):
            raise ValueError(f"{d / ADAPTER_CONFIG}: {unsupported} adapters are not supported")
    if raw.get("rank_pattern") or raw.get("alpha_pattern"):
        raise ValueError(f"{d / ADAPTER_CONFIG}: per-layer rank_pattern/alpha_pattern is not supported")
    for unsupported in ("layers_to_transform", "layers_pattern"):
        if raw.get(unsupported) not in (None, [], ""):
            raise ValueError(f"{d / ADAPTER_CONFIG}: {unsupported} is not supported")
    targets = raw.get("target_modules")
    if isinstance(targets, str):
        raise ValueError(f"{d / ADAPTER_CONFIG}: a regular-expression target_modules ({targets!r}) is not supported; list the modules")
    try:
        return AdapterConfig(
            r=int(raw["r"]),
            lora_alpha=float(raw["lora_alpha"]),
            target_modules=list(targets or []),
            lora_dropout=float(raw.get("lora_dropout") or 0.0),
            modules_to_save=list(raw.get("modules_to_save") or []),
            base_model_name_or_path=raw.get("base_model_name_or_path"),
            task_type=raw.get("task_type"),
            fan_in_fan_out=bool(raw.get("fan_in_fan_out", False)),
        )
    except KeyError as e:
        raise ValueError(f"{d / ADAPTER_CONFIG} lacks the field {e.args[0]!r}") from None


def load_adapter(model: nn.Module, directory: str | os.PathLike, *, dropout: float | None = None) -> nn.Module:
    """Wrap ``model``'s target layers as its adapter config says and load A, B and the saved
    modules (PEFT's layout, whether llmkit or PEFT wrote it). In place; returns ``model`` with
    only the adapter trainable. Everything is checked before the model is touched: every key
    must find its place with the right shape, and every LoRA layer its weights."""
    d = Path(directory)
    cfg = read_adapter_config(d)
    try:
        weights = load_file(d / ADAPTER_WEIGHTS)
    except FileNotFoundError:
        raise FileNotFoundError(f"{d} has no {ADAPTER_WEIGHTS}") from None
    except Exception as e:
        raise ValueError(f"{d / ADAPTER_WEIGHTS} is corrupt or truncated ({str(e).splitlines()[0][:100]})") from None
    state = _plan_adapter(model, cfg, weights, d)
    replace_linear_with_lora(model, cfg.r, cfg.lora_alpha, linear_layer_names(model, cfg.target_modules), cfg.lora_dropout if dropout is None else dropout)
    mark_trainable(model, resolve_modules(model, cfg.modules_to_save))
    own = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            own[name].copy_(value.to(own[name].dtype))
    return model


def _plan_adapter(model: nn.Module, cfg: AdapterConfig, weights: dict[str, torch.Tensor], d: Path) -> dict[str, torch.Tensor]:
    """Map the file's keys to the parameter names the model will have once wrapped, checking
    names and shapes; raises ValueError (the model untouched) when anything does not fit."""
    wrap = linear_layer_names(model, cfg.target_modules)
    if not wrap:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in linear_layer_names(model, None)})
        raise ValueError(f"{d / ADAPTER_CONFIG}: target_modules {cfg.target_modules} match no Linear layer of this model (it has {', '.join(leaves)})")
    expected: dict[str, tuple[int, ...]] = {}
    for n in wrap:
        m = model.get_submodule(n)
        expected[f"{n}.lora_A.weight"] = (cfg.r, m.in_features)
        expected[f"{n}.lora_B.weight"] = (m.out_features, cfg.r)
    for n in resolve_modules(model, cfg.modules_to_save):
        for pname, p in model.get_submodule(n).named_parameters():
            expected[f"{n}.{pname}"] = tuple(p.shape)
    state: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        name = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
        name = name.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.").replace(".modules_to_save.default.", ".")
        if name not in expected:
            raise ValueError(f"{d / ADAPTER_WEIGHTS}: {key} has no place in this model")
        if tuple(value.shape) != expected[name]:
            raise ValueError(f"{d / ADAPTER_WEIGHTS}: {key} has shape {tuple(value.shape)}, the model expects {expected[name]}")
        state[name] = value
    lora_keys = {k for k in expected if ".lora_" in k}
    if lora_keys - set(state):
        raise ValueError(f"{d / ADAPTER_WEIGHTS} lacks weights for {sorted(lora_keys - set(state))[:3]}")
    return state
