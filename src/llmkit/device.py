"""Choosing the torch device: one rule for every command that takes ``--device``."""

from __future__ import annotations

import torch

__all__ = ["pick_device"]


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; a named device must exist here."""
    if name != "auto":
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("CUDA is not available in this torch build or on this machine; use --device cpu or auto")
        if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError("MPS is not available here; use --device cpu or auto")
        if dev.type not in ("cpu", "cuda", "mps"):
            raise ValueError(f"unsupported device {name!r}; use auto, cpu, cuda or mps")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
