"""Corpora: the embedded defaults (`pydocs`, `pysource`) and user files or directories.

Every Python install carries two real corpora, so every default in llmkit works offline:

- ``pydocs``: the standard library's documentation rendered to plain text by `pydoc`,
  one document per top-level module (id = module name). Rendering imports ~200 modules,
  so it runs in a child interpreter (their prints, warnings and side effects stay there)
  and the result is cached as JSONL under `cache_dir()`, keyed by the Python build.
- ``pysource``: the standard library's own ``.py`` files, tests left out
  (id = path relative to the stdlib directory).

Any other spec is a path: a file or a directory of ``.txt/.md/.rst/.py/.jsonl`` files.
Bad input fails early with a one-line `CorpusError` that names the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

_log = logging.getLogger(__name__)

BUILTIN_CORPORA = ("pydocs", "pysource")

# Bump when the rendered text changes for the same Python (child flags, normalisation...).
CORPUS_FORMAT_VERSION = 1

PYDOCS_EXCLUDED: frozenset[str] = frozenset(
    # Import side effects: prints the Zen of Python / opens a web browser.
    {"this", "antigravity"}
    # GUI toolkits and their demos (need a display, start Tk).
    | {"idlelib", "tkinter", "turtle", "turtledemo"}
    # Changes the terminal's line editing on import.
    | {"readline"}
    # The regression-test package: huge, and not documentation.
    | {"test"}
    # Windows-only: they fail to import elsewhere; excluding them everywhere keeps one module
    # set across platforms (modules that fail to import are skipped anyway).
    | {"msvcrt", "winreg", "winsound", "nt", "msilib", "_winapi"}
)

USER_SUFFIXES = (".jsonl", ".md", ".py", ".rst", ".txt")

# Memory addresses differ on every run (ASLR): `<object at 0x7f12ab34>`, ctypes' `<PyDLL 'x', handle 7f12ab34>`.
_ADDRESSES = (
    (re.compile(r" at 0x[0-9A-Fa-f]+"), " at 0x..."),
    (re.compile(r", handle [0-9A-Fa-f]+>"), ", handle ...>"),
)
_SKIPPED_STDLIB_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})
_RENDER_TIMEOUT_S = 600.0

# The child's whole program. It is passed with -c and reads the module list from stdin, so
# sys.argv (which pydoc documents under `sys`) never holds a temp path. It writes into its
# cwd, a fresh temp dir: one JSON line per module, and the module it is importing now, so a
# crash or hang can be pinned to one module and the build can go on without it.
_RENDER_SCRIPT = r"""
import importlib, json, sys, warnings
warnings.simplefilter("ignore")
names = json.load(sys.stdin)
out = open("docs.jsonl", "w", encoding="utf-8")
progress = open("progress.txt", "w", encoding="utf-8")
import pydoc
for name in names:
    progress.write(name + "\n")
    progress.flush()
    try:
        text = pydoc.plaintext.document(importlib.import_module(name))
    except (Exception, SystemExit) as exc:
        print(f"skip {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        continue
    out.write(json.dumps({"id": name, "text": text}) + "\n")
    out.flush()
out.close()
"""


class CorpusError(ValueError):
    """A corpus could not be loaded; the message is one line and names the file or spec."""


@dataclass(frozen=True)
class Document:
    """One document of a corpus: a stable id (module name, relative path, `path:line`) and its text."""

    id: str
    text: str


@dataclass
class Corpus:
    """An ordered list of documents with a name ("pydocs", "pysource" or the path as given)."""

    name: str
    documents: list[Document]

    def __len__(self) -> int:
        return len(self.documents)

    def __iter__(self) -> Iterator[Document]:
        return iter(self.documents)

    def texts(self) -> list[str]:
        """The document texts, in order."""
        return [doc.text for doc in self.documents]

    def text(self, sep: str = "\n\n") -> str:
        """All documents joined with `sep`."""
        return sep.join(self.texts())

    @property
    def nbytes(self) -> int:
        """Total UTF-8 bytes of the document texts (separators not counted)."""
        return sum(len(doc.text.encode("utf-8")) for doc in self.documents)

    def head(self, max_bytes: int) -> Corpus:
        """A prefix of whole documents (at least one) whose texts total at most about `max_bytes`."""
        kept: list[Document] = []
        total = 0
        for doc in self.documents:
            size = len(doc.text.encode("utf-8"))
            if kept and total + size > max_bytes:
                break
            kept.append(doc)
            total += size
        return Corpus(f"{self.name}:head", kept)


# --------------------------------------------------------------------------- entry point


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


# --------------------------------------------------------------------------- pydocs


def cache_dir() -> pathlib.Path:
    """Where llmkit caches derived data: $LLMKIT_CACHE_DIR, else $XDG_CACHE_HOME/llmkit, else ~/.cache/llmkit."""
    if os.environ.get("LLMKIT_CACHE_DIR"):
        return pathlib.Path(os.environ["LLMKIT_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return pathlib.Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "llmkit"
    return pathlib.Path.home() / ".cache" / "llmkit"


def pydocs(*, refresh: bool = False) -> Corpus:
    """The standard library's pydoc text, one document per module, sorted by module name.

    Built once per Python build (a few seconds) and then read from the JSONL cache;
    `refresh=True` rebuilds it. A corrupt cache file is rebuilt, never trusted.
    """
    path = _pydocs_cache_path()
    docs = None if refresh else _read_cache(path)
    if docs is None:
        start = time.perf_counter()
        docs = _render_pydocs(_pydocs_module_names())
        _write_cache(path, docs)
        _log.info(
            "built pydocs: %d modules, %d bytes in %.1f s -> %s",
            len(docs), sum(len(d.text.encode()) for d in docs), time.perf_counter() - start, path,
        )
    return Corpus("pydocs", docs)


def _pydocs_module_names() -> list[str]:
    """Public top-level stdlib modules to document, sorted."""
    return sorted(
        name for name in sys.stdlib_module_names
        if not name.startswith("_") and name not in PYDOCS_EXCLUDED
    )


def _version_key() -> str:
    """A short hash of everything that changes the rendered text; a new key means a new cache file."""
    parts = [sys.version, sys.platform, sorted(PYDOCS_EXCLUDED), CORPUS_FORMAT_VERSION]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]


def _pydocs_cache_path() -> pathlib.Path:
    return cache_dir() / f"pydocs-{_version_key()}.jsonl"


def _child_env() -> dict[str, str]:
    """A fixed environment for the child: pydoc prints `os.environ`, `time.tzname`, set reprs...

    so the user's variables would leak into the corpus and make it differ between runs.
    """
    env = {"PATH": os.defpath, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "TZ": "UTC", "PYTHONHASHSEED": "0"}
    if "SYSTEMROOT" in os.environ:  # Windows cannot start Python without it.
        env["SYSTEMROOT"] = os.environ["SYSTEMROOT"]
    return env


def _render_pydocs(names: list[str]) -> list[Document]:
    """Render `names` with pydoc in child interpreters; a module that crashes or hangs its child is skipped."""
    docs: list[Document] = []
    remaining = list(names)
    while remaining:
        done, stopped_at = _render_batch(remaining)
        docs.extend(done)
        if stopped_at is None:
            break
        if stopped_at not in {doc.id for doc in done}:
            _log.warning("pydocs: skipping module %r, which crashed or hung the renderer", stopped_at)
        remaining = remaining[remaining.index(stopped_at) + 1 :]
    return sorted(docs, key=lambda doc: doc.id)


def _render_batch(names: list[str]) -> tuple[list[Document], str | None]:
    """One child run: (documents rendered, the last module it started if it died, else None)."""
    # -S: no site-packages or .pth hooks (setuptools' would swap in its own distutils);
    # -P: nothing from the cwd on sys.path; -W ignore + utf8 mode: quiet and encoding-stable.
    cmd = [sys.executable, "-S", "-P", "-X", "utf8", "-W", "ignore", "-c", _RENDER_SCRIPT]
    with tempfile.TemporaryDirectory(prefix="llmkit-pydocs-") as tmp:
        out = pathlib.Path(tmp)
        try:
            proc = subprocess.run(
                cmd, input=json.dumps(names), cwd=tmp, env=_child_env(), text=True,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=_RENDER_TIMEOUT_S,
            )
            failed, detail = proc.returncode != 0, f"exit status {proc.returncode}"
            _log.debug("pydocs child stderr:\n%s", proc.stderr)
        except subprocess.TimeoutExpired:
            failed, detail = True, f"timed out after {_RENDER_TIMEOUT_S:.0f} s"
        docs = _read_child_output(out / "docs.jsonl")
        progress = out / "progress.txt"
        started = progress.read_text(encoding="utf-8").splitlines() if progress.exists() else []
    if not failed:
        return docs, None
    if not started:
        raise CorpusError(f"the pydoc renderer {sys.executable!r} failed before any module ({detail})")
    return docs, started[-1]


def _read_child_output(path: pathlib.Path) -> list[Document]:
    """Parse the child's JSONL, normalising memory addresses; a torn last line is dropped."""
    docs = []
    for line in _jsonl_lines(path) if path.exists() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        text = record["text"]
        for pattern, placeholder in _ADDRESSES:
            text = pattern.sub(placeholder, text)
        docs.append(Document(record["id"], text))
    return docs


def _jsonl_lines(path: pathlib.Path) -> list[str]:
    """Non-empty lines, split on "\\n" only: splitlines() would also split strings at U+2028, \\x85..."""
    return [line for line in path.read_text(encoding="utf-8").split("\n") if line]


def _read_cache(path: pathlib.Path) -> list[Document] | None:
    """The cached documents, or None when the file is missing or not a valid cache."""
    try:
        docs = [Document(r["id"], r["text"]) for r in map(json.loads, _jsonl_lines(path))]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _log.warning("pydocs cache %s is unreadable (%s); rebuilding", path, exc)
        return None
    if not docs or not all(isinstance(d.id, str) and isinstance(d.text, str) for d in docs):
        _log.warning("pydocs cache %s is empty or malformed; rebuilding", path)
        return None
    return docs


def _write_cache(path: pathlib.Path, docs: list[Document]) -> None:
    """Write JSONL atomically: a temp file in the same directory, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with open(fd, "w", encoding="utf-8", newline="\n") as f:
            for doc in docs:
                f.write(json.dumps({"id": doc.id, "text": doc.text}, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


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
