"""Token files and sliding windows.

A corpus is tokenized once into a directory of memory-mapped arrays:

- ``train.bin`` / ``val.bin``: raw little-endian ``uint16`` (vocabularies up to 65,536 ids)
  or ``uint32`` token ids; documents are joined with ``<|endoftext|>`` when the tokenizer
  has it, so a model learns where texts end.
- ``tokens.json``: the sidecar: dtype, token counts, vocabulary size, the tokenizer and the
  corpus it came from.

Training reads fixed-length windows from these arrays: window ``i`` starts at ``i * stride``,
its input is ``block_size`` tokens and its target is the same span shifted by one (the
course's sliding windows: ``stride == block_size`` tiles the text, a smaller stride overlaps).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmkit._io import read_json, staged_dir

SIDECAR = "tokens.json"
FORMAT = "llmkit-tokens"


@dataclass(frozen=True)
class TokenFiles:
    """A tokenized corpus on disk."""

    path: Path
    meta: dict

    def split(self, name: str) -> np.ndarray:
        """The ``train`` or ``val`` ids as a read-only memory map."""
        if name not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', not {name!r}")
        n = self.meta["n_tokens"][name]
        if n == 0:
            return np.zeros(0, dtype=self.meta["dtype"])
        return np.memmap(self.path / f"{name}.bin", dtype=self.meta["dtype"], mode="r", shape=(n,))

    @property
    def vocab_size(self) -> int:
        return self.meta["n_vocab"]


def _dtype_for(n_vocab: int) -> str:
    return "uint16" if n_vocab <= 1 << 16 else "uint32"


def split_documents(n_docs: int, val_fraction: float) -> list[bool]:
    """Which documents go to validation: every k-th (k = round(1 / val_fraction)), so both
    splits sample the whole corpus; True means validation."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    k = max(2, round(1 / val_fraction))
    return [i % k == k - 1 for i in range(n_docs)]


def write_token_files(
    texts: Sequence[str],
    tokenizer,
    out_dir: str | os.PathLike,
    *,
    val_fraction: float = 0.1,
    corpus_name: str = "",
    tokenizer_ref: str = "",
    overwrite: bool = False,
) -> TokenFiles:
    """Tokenize ``texts`` (whole documents) into ``out_dir`` atomically: everything is
    written into a temporary directory beside it and renamed into place at the end."""
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (CLI: --force) to replace it")
    if not texts:
        raise ValueError("no documents to tokenize")
    is_val = split_documents(len(texts), val_fraction)
    if not any(is_val) or all(is_val):  # too few documents: split the token stream instead
        is_val = None
    eot = getattr(tokenizer, "eot_token", None)
    dtype = _dtype_for(tokenizer.n_vocab)
    encoded = tokenizer.encode_batch(list(texts)).input_ids
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    for i, ids in enumerate(encoded):
        arr = np.asarray(ids + ([eot] if eot is not None else []), dtype=dtype)
        parts["val" if is_val is not None and is_val[i] else "train"].append(arr)
    arrays = {k: np.concatenate(v) if v else np.zeros(0, dtype=dtype) for k, v in parts.items()}
    if is_val is None:
        cut = int(len(arrays["train"]) * (1 - val_fraction))
        arrays = {"train": arrays["train"][:cut], "val": arrays["train"][cut:]}
    meta = {
        "format": FORMAT,
        "version": 1,
        "dtype": dtype,
        "n_tokens": {k: int(len(a)) for k, a in arrays.items()},
        "n_vocab": tokenizer.n_vocab,
        "eot_token": eot,
        "n_documents": len(texts),
        "corpus": corpus_name,
        "tokenizer": tokenizer_ref or getattr(tokenizer, "name", ""),
        "val_fraction": val_fraction,
    }
    with staged_dir(out, overwrite=overwrite) as tmp:  # all or nothing
        for k, a in arrays.items():
            with open(tmp / f"{k}.bin", "wb") as f:
                f.write(a.tobytes())
                f.flush()
                os.fsync(f.fileno())
        (tmp / SIDECAR).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return TokenFiles(out, meta)


def load_token_files(path: str | os.PathLike) -> TokenFiles:
    p = Path(path)
    meta = read_json(p / SIDECAR, missing=f"{p} is not a token directory: missing {SIDECAR}")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{p / SIDECAR} is not an llmkit token file")
    for k, n in meta["n_tokens"].items():
        size = (p / f"{k}.bin").stat().st_size if n else 0
        if size != n * np.dtype(meta["dtype"]).itemsize:
            raise ValueError(f"{p / (k + '.bin')} has {size} bytes; the sidecar promises {n} tokens")
    return TokenFiles(p, meta)


def num_windows(n_tokens: int, block_size: int, stride: int) -> int:
    """How many windows of ``block_size`` inputs (+1 target) fit, starting every ``stride``."""
    if block_size < 1 or stride < 1:
        raise ValueError("block_size and stride must be >= 1")
    usable = n_tokens - block_size - 1
    return 0 if usable < 0 else usable // stride + 1


class WindowSampler:
    """Batches of sliding windows from a token array, random (a fresh permutation of the
    windows every epoch) or sequential, with a position that can be saved and restored so
    that a resumed run sees exactly the batches an uninterrupted run would."""

    def __init__(self, data: np.ndarray, block_size: int, batch_size: int, *, stride: int | None = None, shuffle: bool = True, seed: int = 0):
        self.data = data
        self.block_size = block_size
        self.batch_size = batch_size
        self.stride = stride or block_size
        self.shuffle = shuffle
        self.seed = seed
        self.n = num_windows(len(data), block_size, self.stride)
        if self.n == 0:
            raise ValueError(f"{len(data)} tokens are too few for one window of {block_size}+1 tokens")
        self.epoch = 0
        self.cursor = 0
        self._order = self._make_order()

    def _make_order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed, "n": self.n}

    def load_state_dict(self, state: dict) -> None:
        if state["n"] != self.n or state["seed"] != self.seed:
            raise ValueError("the saved data position belongs to different data or another seed")
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        self._order = self._make_order()

    def next_batch(self):
        """``(x, y)`` int64 tensors of shape (batch_size, block_size)."""
        import torch

        starts = []
        for _ in range(self.batch_size):
            if self.cursor == self.n:
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._make_order()
            starts.append(int(self._order[self.cursor]) * self.stride)
            self.cursor += 1
        T = self.block_size
        chunk = np.stack([np.asarray(self.data[s : s + T + 1], dtype=np.int64) for s in starts])  # (B, T+1)
        t = torch.from_numpy(chunk)
        return t[:, :-1], t[:, 1:]  # inputs and next-token targets
