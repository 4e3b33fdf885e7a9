"""Small file helpers shared by every floor: atomic writes and refusal to clobber."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old or the new file.

    The bytes go to a temporary file in the same directory, are flushed to disk, and the
    temporary file is renamed over ``path`` (``os.replace`` is atomic on POSIX and Windows).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode(path))  # mkstemp makes 0600; keep the mode a plain open() would give
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _file_mode(path: Path) -> int:
    """The existing file's permissions, else 0666 minus the process umask."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def atomic_write_with(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Atomic version of a library writer that takes a path (``safetensors``' ``save_file``):
    ``write(tmp)`` fills a temporary file beside ``path``, which gets the mode a plain open()
    would give (safetensors makes its files 0600), is flushed to disk and renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, _file_mode(path))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def jsonl_objects(text: str, where: str = "") -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of JSONL ``text``; ValueError naming
    ``where`` and the line for a line that is not a JSON object."""
    prefix = f"{where} " if where else ""
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines(): a JSON string may hold U+2028 and friends
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{prefix}line {n}: not JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{prefix}line {n}: not a JSON object")
        yield n, row


def read_json(path: str | os.PathLike, *, missing: str):
    """Parse a JSON file; FileNotFoundError(``missing``) when it is absent, and a ValueError
    naming the file when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(missing) from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is corrupt: {e}") from None


def refuse_overwrite(paths: list[Path], overwrite: bool) -> None:
    """Raise ``FileExistsError`` naming the first existing path unless ``overwrite``."""
    if overwrite:
        return
    for p in paths:
        if p.exists():
            raise FileExistsError(f"{p} already exists; pass overwrite=True (CLI: --force) to replace it")


def refuse_nonempty_dir(out: Path, overwrite: bool, protect: Sequence[str | os.PathLike] = ()) -> None:
    """Refuse to (re)place a run directory at ``out``: when it exists and is not an empty
    directory (unless ``overwrite``), when it is a file (always: a run never replaces a file),
    and when it is, holds or lies inside one of the ``protect`` paths (always: e.g. the base
    model or the data the run reads)."""
    target = out.resolve()
    for p in protect:
        q = Path(p).resolve()
        if target == q or q.is_relative_to(target) or target.is_relative_to(q):
            raise ValueError(f"the output {out} overlaps {p}, which this run reads; choose another output directory")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file, not a run directory; choose another output")
    if out.exists() and not overwrite and any(out.iterdir()):
        raise FileExistsError(f"{out} already exists and is not empty; pass overwrite=True (CLI: --force) to replace it")


@contextmanager
def staged_dir(out: str | os.PathLike, *, overwrite: bool = False, protect: Sequence[str | os.PathLike] = ()) -> Iterator[Path]:
    """Build a directory atomically: yields a temporary sibling of ``out`` (with the mode
    ``mkdir`` would give) to fill; when the block succeeds it is renamed to ``out``, so ``out``
    is either complete or untouched. :func:`refuse_nonempty_dir` guards ``out`` before and again
    after the block (which may run for long)."""
    out = Path(out)
    refuse_nonempty_dir(out, overwrite, protect)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        mask = os.umask(0)
        os.umask(mask)
        tmp.chmod(0o777 & ~mask)  # mkdtemp makes 0700
        yield tmp
        plain = 0o666 & ~mask
        for f in tmp.rglob("*"):  # some writers (transformers' save_pretrained) leave mkstemp's 0600
            if f.is_file() and not f.is_symlink() and f.stat().st_mode & 0o777 == 0o600 != plain:
                f.chmod(plain)
        refuse_nonempty_dir(out, overwrite, protect)
        if out.is_dir():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
