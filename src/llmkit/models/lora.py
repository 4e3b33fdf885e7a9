"""LoRA from scratch (Hu et al. 2021): a frozen weight W plus a trainable low-rank update.

    y = x W^T + b + (alpha / r) * dropout(x) A^T B^T        A: (r, in), B: (out, r)

A starts Kaiming-uniform and B at zero, so a fresh adapter changes nothing; only A and B
(r * (in + out) numbers per layer instead of in * out) are trained. :meth:`LoRALinear.merge`
folds the update into W for inference at the base model's speed; :meth:`unmerge` takes it out.

Adapters are saved in PEFT's layout (``adapter_config.json`` + ``adapter_model.safetensors``,
keys ``base_model.model.<module>.lora_A.weight``; fully trained modules such as a new
classification head under ``modules_to_save`` as ``base_model.model.<module>.weight``), so
``peft.PeftModel.from_pretrained`` loads them, and adapters PEFT trained load here. Our
module names (``<module>.base_layer``, ``<module>.lora_A``, ``<module>.lora_B``) are PEFT's too.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from llmkit._io import atomic_write_text, atomic_write_with, read_json, refuse_overwrite

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."


class LoRALinear(nn.Module):
    """``base`` (an ``nn.Linear``, frozen) plus a rank-``rank`` update scaled by ``alpha / rank``."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps nn.Linear, not {type(base).__name__}")
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        if not alpha > 0:
            raise ValueError(f"LoRA alpha must be > 0, got {alpha}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
        self.base_layer = base
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        w = base.weight
        self.lora_A = nn.Linear(base.in_features, rank, bias=False, device=w.device, dtype=w.dtype)  # A: (r, in)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False, device=w.device, dtype=w.dtype)  # B: (out, r)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.reset_lora_parameters()
        for p in base.parameters():
            p.requires_grad_(False)

    def reset_lora_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # as nn.Linear initialises its weight
        nn.init.zeros_(self.lora_B.weight)  # the update starts at exactly zero

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def delta_weight(self) -> torch.Tensor:
        """The update ``(alpha / r) B A`` (out, in) that merging adds to the base weight."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)  # (..., out)
        if self.merged:
            if self.training and torch.is_grad_enabled() and self.lora_A.weight.requires_grad:
                raise RuntimeError("this LoRA layer is merged: unmerge it before training (merged, A and B get no gradient)")
            return y
        a = self.lora_A(self.lora_dropout(x))  # (..., r)
        # y += scaling * a B^T, in place and in one matmul: nn.Linear's backward does not need its
        # output, and no full-size temporaries are made (they fragment the CPU heap: ~0.4 GB on gpt2-124m)
        y2 = y.view(-1, y.shape[-1])
        dt = y2.dtype  # under autocast y and a are bf16/fp16 while B stays float32: in-place ops do not autocast
        y2.addmm_(a.reshape(-1, a.shape[-1]).to(dt), self.lora_B.weight.t().to(dt), alpha=self.scaling)
        return y

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight (inference at the base model's cost)."""
        if not self.merged:
            self.base_layer.weight += self.delta_weight().to(self.base_layer.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update out of the base weight again."""
        if self.merged:
            self.base_layer.weight -= self.delta_weight().to(self.base_layer.weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, merged={self.merged}"


def _matches(name: str, targets: Sequence[str] | None) -> bool:
    """PEFT's rule: a target names a module exactly or is a suffix after a dot."""
    return targets is None or any(name == t or name.endswith("." + t) for t in targets)


def replace_linear_with_lora(
    model: nn.Module, rank: int, alpha: float, targets: Sequence[str] | None = None, dropout: float = 0.0, *, _prefix: str = ""
) -> nn.Module:
    """Replace every ``nn.Linear`` in ``model`` (or those whose names match ``targets``, PEFT's
    suffix rule) by a :class:`LoRALinear`, recursing over the children. In place; returns
    ``model``. Freeze the model first (:func:`freeze`) to train the adapters alone."""
    for name, child in model.named_children():
        full = f"{_prefix}{name}"
        if isinstance(child, nn.Linear) and _matches(full, targets):
            setattr(model, name, LoRALinear(child, rank, alpha, dropout).train(child.training))  # keep the eval/train mode
        elif not isinstance(child, LoRALinear):
            replace_linear_with_lora(child, rank, alpha, targets, dropout, _prefix=full + ".")
    return model


def freeze(model: nn.Module) -> nn.Module:
    """``requires_grad = False`` on every parameter; returns ``model``."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def mark_trainable(model: nn.Module, modules_to_save: Iterable[str] = ()) -> nn.Module:
    """Train exactly the LoRA matrices and the modules named in ``modules_to_save`` (e.g. a new
    classification head); freeze everything else."""
    freeze(model)
    for m in lora_modules(model).values():
        for p in (*m.lora_A.parameters(), *m.lora_B.parameters()):
            p.requires_grad_(True)
    for name in resolve_modules(model, list(modules_to_save)):
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(True)
    return model


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Unique parameters (tied ones once), the trainable ones by default."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _untie_shared_bases(model: nn.Module) -> None:
    """Give a LoRA layer whose base weight is shared (a head tied to the token embedding) its
    own copy, so merging its update cannot change the embedding too."""
    uses: dict[int, int] = {}
    for mod in model.modules():
        for p in mod.parameters(recurse=False):
            uses[id(p)] = uses.get(id(p), 0) + 1
    for m in lora_modules(model).values():
        w = m.base_layer.weight
        if uses.get(id(w), 0) > 1:
            m.base_layer.weight = nn.Parameter(w.detach().clone(), requires_grad=w.requires_grad)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every update into its base weight (a tied head is untied first)."""
    _untie_shared_bases(model)
    for m in lora_modules(model).values():
        m.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    for m in lora_modules(model).values():
        m.unmerge()
    return model


def remove_lora(model: nn.Module, merge: bool = True) -> nn.Module:
    """Put plain ``nn.Linear`` layers back (merged with their update unless ``merge=False``;
    a tied head is untied first)."""
    if merge:
        _untie_shared_bases(model)
    for name, m in list(lora_modules(model).items()):
        if merge:
            m.merge()
        elif m.merged:
            m.unmerge()
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, m.base_layer)
    return model


# -- PEFT's file layout ---------------------------------------------------------------------------
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
    selected = {n for n in candidates if _matches(n, leaves)}
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


def _linear_names(model: nn.Module, targets: Sequence[str] | None) -> list[str]:
    """The Linear layers :func:`replace_linear_with_lora` would wrap (it does not descend into
    LoRA layers)."""
    names = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and not isinstance(m, LoRALinear) and not name.endswith((".lora_A", ".lora_B")) and ".base_layer" not in name:
            if _matches(name, targets):
                names.append(name)
    return names


def resolve_modules(model: nn.Module, names: Sequence[str]) -> list[str]:
    """Full module names for ``modules_to_save`` entries, by PEFT's suffix rule (``lm_head``
    finds ``model.lm_head``); a name that finds nothing is an error."""
    modules = [n for n, _ in model.named_modules() if n]
    out = []
    for want in names:
        found = [n for n in modules if _matches(n, [want]) and not n.endswith((".lora_A", ".lora_B", ".base_layer"))]
        if not found:
            raise ValueError(f"modules_to_save names {want!r}, which this model does not have")
        out += [n for n in found if n not in out]
    return out


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
    replace_linear_with_lora(model, cfg.r, cfg.lora_alpha, _linear_names(model, cfg.target_modules), cfg.lora_dropout if dropout is None else dropout)
    mark_trainable(model, resolve_modules(model, cfg.modules_to_save))
    own = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            own[name].copy_(value.to(own[name].dtype))
    return model


def _plan_adapter(model: nn.Module, cfg: AdapterConfig, weights: dict[str, torch.Tensor], d: Path) -> dict[str, torch.Tensor]:
    """Map the file's keys to the parameter names the model will have once wrapped, checking
    names and shapes; raises ValueError (the model untouched) when anything does not fit."""
    wrap = _linear_names(model, cfg.target_modules)
    if not wrap:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in _linear_names(model, None)})
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
