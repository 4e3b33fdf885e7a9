"""Atomic, resumable training checkpoints without pickle.

A checkpoint is a directory ``checkpoints/step_XXXXXXXX`` holding:

- ``model.safetensors``: the weights;
- ``optimizer.safetensors`` + ``optimizer.json``: AdamW's per-parameter tensors, and its
  hyper-parameters (plain JSON);
- ``rng.safetensors``: the torch CPU (and CUDA) random states, so dropout continues exactly;
- ``trainer.json``: the step, the data sampler's position and anything else the loop needs.

It is written into a temporary directory, every file fsynced, then renamed into place, and
``checkpoints/latest.json`` is replaced atomically to point at it. A process killed at any
moment leaves either the previous checkpoint or the new one, never half of one. Only the last
``keep_last`` checkpoints are kept.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from llmkit._io import atomic_write_text

LATEST = "latest.json"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tensors(sd: dict) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share storage (a tied head)
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}


def optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON metadata."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{name}"] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_files(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> dict[str, torch.Tensor]:
    out = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda{i}"] = s
    return out


def set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(run_dir: str | os.PathLike, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, trainer_state: dict, keep_last: int = 2) -> Path:
    """Write checkpoint ``step`` atomically and prune old ones; returns its directory."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        opt_tensors, opt_meta = optimizer_to_files(optimizer)
        save_file(_tensors(model.state_dict()), tmp / "model.safetensors")
        save_file(opt_tensors, tmp / "optimizer.safetensors")
        save_file(rng_state(), tmp / "rng.safetensors")
        (tmp / "optimizer.json").write_text(json.dumps(opt_meta), encoding="utf-8")
        (tmp / "trainer.json").write_text(json.dumps({"step": step, **trainer_state}, indent=2), encoding="utf-8")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / LATEST, json.dumps({"step": step, "dir": final.name}))
    _prune(root, keep_last)
    return final


def _prune(root: Path, keep_last: int) -> None:
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for p in done[: max(0, len(done) - max(1, keep_last))]:
        shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(".step_*"):  # temp dirs of killed writers
        shutil.rmtree(p, ignore_errors=True)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint ``latest.json`` points at; when that file is missing or corrupt, the
    newest complete ``step_*`` directory; None when there is none."""
    root = Path(run_dir) / "checkpoints"
    try:
        name = json.loads((root / LATEST).read_text(encoding="utf-8"))["dir"]
        if isinstance(name, str) and re.fullmatch(r"step_\d+", name) and (root / name / "trainer.json").is_file():
            return root / name
    except (OSError, ValueError, KeyError, TypeError):
        pass
    done = sorted(p for p in root.glob("step_*") if re.fullmatch(r"step_\d+", p.name) and (p / "trainer.json").is_file())
    return done[-1] if done else None


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, restore_rng: bool = True) -> dict:
    """Load weights (and optimizer and RNG state) from ``path``; returns ``trainer.json``."""
    p = Path(path)
    try:
        state = json.loads((p / "trainer.json").read_text(encoding="utf-8"))
        model.load_state_dict(load_file(p / "model.safetensors"))
        if optimizer is not None:
            meta = json.loads((p / "optimizer.json").read_text(encoding="utf-8"))
            optimizer_from_files(optimizer, load_file(p / "optimizer.safetensors"), meta)
        if restore_rng:
            set_rng_state(load_file(p / "rng.safetensors"))
        missing = {"sampler", "step"} - set(state)
        if missing:
            raise KeyError(f"trainer.json lacks {sorted(missing)}")
    except Exception as e:  # safetensors, JSON, missing keys, shape mismatches: all mean a bad checkpoint
        raise ValueError(f"checkpoint {p} is unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                         "delete that directory to resume from the one before it") from None
    return state
