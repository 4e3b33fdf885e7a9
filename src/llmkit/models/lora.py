"""LoRA from scratch (Hu et al. 2021): a frozen weight W plus a trainable low-rank update.

    y = x W^T + b + (alpha / r) * dropout(x) A^T B^T        A: (r, in), B: (out, r)

A starts Kaiming-uniform and B at zero, so a fresh adapter changes nothing; only A and B
(r * (in + out) numbers per layer instead of in * out) are trained. :meth:`LoRALinear.merge`
folds the update into W for inference at the base model's speed; :meth:`unmerge` takes it out.

Our module names (``<module>.base_layer``, ``<module>.lora_A``, ``<module>.lora_B``) are
PEFT's; :mod:`llmkit.models.lora_files` saves and loads adapters in PEFT's file layout.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn


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


def matches_targets(name: str, targets: Sequence[str] | None) -> bool:
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
        if isinstance(child, nn.Linear) and matches_targets(full, targets):
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


def linear_layer_names(model: nn.Module, targets: Sequence[str] | None) -> list[str]:
    """The Linear layers :func:`replace_linear_with_lora` would wrap (it does not descend into
    LoRA layers)."""
    names = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and not isinstance(m, LoRALinear) and not name.endswith((".lora_A", ".lora_B")) and ".base_layer" not in name:
            if matches_targets(name, targets):
                names.append(name)
    return names


def resolve_modules(model: nn.Module, names: Sequence[str]) -> list[str]:
    """Full module names for ``modules_to_save`` entries, by PEFT's suffix rule (``lm_head``
    finds ``model.lm_head``); a name that finds nothing is an error."""
    modules = [n for n, _ in model.named_modules() if n]
    out = []
    for want in names:
        found = [n for n in modules if matches_targets(n, [want]) and not n.endswith((".lora_A", ".lora_B", ".base_layer"))]
        if not found:
            raise ValueError(f"modules_to_save names {want!r}, which this model does not have")
        out += [n for n in found if n not in out]
    return out
