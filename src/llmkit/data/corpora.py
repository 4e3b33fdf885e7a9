"""Corpora: the embedded defaults (`pydocs`, `pysource`) and user files or directories.

Every Python install carries two real corpora, so every default in llmkit works offline:

- ``pydocs``: the standard library's documentation rendered to plain text by `pydoc`,
  one document per top-level module (id = module name); built and cached by
  :mod:`llmkit.data.pydocs`.
- ``pysource``: the standard library's own ``.py`` files, tests left out
  (id = path relative to the stdlib directory).

Any other spec is a path: a file or a directory of ``.txt/.md/.rst/.py/.jsonl`` files.
Bad input fails early with a one-line `CorpusError` that names the file.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import sysconfig

from llmkit.data.documents import Corpus, CorpusError, Document
from llmkit.data.pydocs import CORPUS_FORMAT_VERSION, PYDOCS_EXCLUDED, cache_dir, pydocs

__all__ = [
    "BUILTIN_CORPORA", "CORPUS_FORMAT_VERSION", "PYDOCS_EXCLUDED", "USER_SUFFIXES", "Corpus", "CorpusError",
    "Document", "cache_dir", "from_path", "load_corpus", "pydocs", "pysource",
]

_log = logging.getLogger(__name__)

BUILTIN_CORPORA = ("pydocs", "pysource")

USER_SUFFIXES = (".jsonl", ".md", ".py", ".rst", ".txt")

_SKIPPED_STDLIB_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})


def load_corpus(spec: str | os.PathLike[str], *, refresh: bool = False) -> Corpus:
    """Load a corpus by spec.

    A str exactly "pydocs" or "pysource" is always the built-in corpus; any other spec that
    exists on disk is a path (a `PathLike` is always a path); otherwise "a+b" loads each part
    and concatenates them in order. `refresh` rebuilds the pydocs cache.
    """
    if isinstance(spec, str) and spec in BUILTIN_CORPORA:
        return pydocs(refresh=refresh) if spec == "pydocs" else pysource()
    name = os.fspath(spec)
    if not name.strip():
        raise CorpusError(f"empty corpus name; use {', '.join(BUILTIN_CORPORA)} or a path")
    if isinstance(spec, str) and "+" in name and not os.path.exists(name):
        if any(not part.strip() for part in name.split("+")):
            raise CorpusError(f"corpus spec {name!r} has an empty part around '+'")
        parts = [load_corpus(part, refresh=refresh) for part in name.split("+")]
        return Corpus(name, [doc for part in parts for doc in part.documents])
    return from_path(spec)


# --------------------------------------------------------------------------- pysource


def pysource() -> Corpus:
    """The standard library's `.py` files (tests and site-packages left out), sorted by relative path."""
    docs, skipped = _read_pysource(pathlib.Path(sysconfig.get_paths()["stdlib"]))
    if skipped:
        _log.info("pysource: skipped %d files that are not valid UTF-8", skipped)
    return Corpus("pysource", docs)


def _read_pysource(root: pathlib.Path) -> tuple[list[Document], int]:
    """(documents, number of non-UTF-8 files skipped) for the `.py` files under `root`; empty files are left out."""
    docs: list[Document] = []
    skipped = 0
    for rel in _walk(root, (".py",), _SKIPPED_STDLIB_DIRS):
        if pathlib.PurePosixPath(rel).name.startswith("test_"):
            continue
        try:
            text = _decode((root / rel).read_bytes())
        except UnicodeDecodeError:
            skipped += 1
            continue
        if text.strip():
            docs.append(Document(rel, text))
    return docs, skipped


# --------------------------------------------------------------------------- user paths


def from_path(path: str | os.PathLike[str]) -> Corpus:
    """A corpus from a file or a directory (recursive, sorted) of .txt/.md/.rst/.py/.jsonl files.

    Plain files are one document each (id = path relative to the directory, or the file name);
    a .jsonl file is one document per line, `{"text": ...}`, id `<file id>:<line number>`.
    In a directory, hidden entries and `__pycache__` are not visited and empty files are skipped
    (an empty `__init__.py` is normal); everything else that cannot be read is a `CorpusError`.
    """
    name = os.fspath(path)
    p = pathlib.Path(name)
    if p.is_file():
        if p.suffix.lower() not in USER_SUFFIXES:
            raise CorpusError(
                f"corpus file {name!r} has unsupported extension {p.suffix!r} "
                f"(expected one of {', '.join(USER_SUFFIXES)})"
            )
        return Corpus(name, _read_user_file(p, p.name, name, allow_empty=False))
    if p.is_dir():
        return Corpus(name, _read_user_dir(p, name))
    raise CorpusError(
        f"no such corpus or path: {name!r} (built-in corpora: {', '.join(BUILTIN_CORPORA)}; "
        "join several with '+')"
    )


def _read_user_dir(root: pathlib.Path, name: str) -> list[Document]:
    """All documents of the corpus files under `root`, in sorted path order."""
    rels = _walk(root, USER_SUFFIXES, frozenset({"__pycache__"}), skip_hidden=True)
    docs: list[Document] = []
    for rel in rels:
        docs.extend(_read_user_file(root / rel, rel, os.path.join(name, rel), allow_empty=True))
    if not docs:
        what = "only empty files" if rels else f"no {'/'.join(USER_SUFFIXES)} files"
        raise CorpusError(f"corpus directory {name!r} has {what}")
    return docs


def _read_user_file(path: pathlib.Path, doc_id: str, shown: str, *, allow_empty: bool) -> list[Document]:
    """The documents of one user file; `shown` is the path named in error messages."""
    text = _decode_checked(path.read_bytes(), shown)
    if not text.strip():
        if allow_empty:
            return []
        raise CorpusError(f"corpus file {shown!r} is empty")
    if path.suffix.lower() == ".jsonl":
        return _parse_jsonl(text, doc_id, shown)
    return [Document(doc_id, text)]


def _parse_jsonl(text: str, doc_id: str, shown: str) -> list[Document]:
    """One document per non-blank line; each line must be a JSON object with a string "text"."""
    docs = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"corpus file {shown!r} line {lineno} is not JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise CorpusError(f'corpus file {shown!r} line {lineno} has no string "text" field')
        docs.append(Document(f"{doc_id}:{lineno}", record["text"]))
    return docs


# --------------------------------------------------------------------------- shared helpers


def _walk(
    root: pathlib.Path, suffixes: tuple[str, ...], skip_dirs: frozenset[str], *, skip_hidden: bool = False
) -> list[str]:
    """Sorted posix paths relative to `root` of the files ending in `suffixes`; symlinked dirs are not followed."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip_dirs and not (skip_hidden and d.startswith("."))]
        for fname in filenames:
            if fname.lower().endswith(suffixes) and not (skip_hidden and fname.startswith(".")):
                found.append(pathlib.Path(dirpath, fname).relative_to(root).as_posix())
    return sorted(found)


def _decode(data: bytes) -> str:
    """Strict UTF-8 with a leading BOM dropped and newlines normalised to \\n, as text-mode open() does."""
    text = data.decode("utf-8")
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def _decode_checked(data: bytes, shown: str) -> str:
    """`_decode`, but binary (NUL bytes) and invalid UTF-8 become one-line CorpusErrors naming the file."""
    nul = data.find(b"\x00")
    if nul >= 0:
        raise CorpusError(f"corpus file {shown!r} is binary (NUL byte at offset {nul})")
    try:
        return _decode(data)
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"corpus file {shown!r} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None
