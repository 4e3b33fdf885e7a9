"""The ``pydocs`` corpus: the standard library's documentation rendered to plain text.

pydoc documents one top-level module at a time (id = module name). Rendering imports ~200
modules, so it runs in a child interpreter (their prints, warnings and side effects stay
there) with a fixed environment, and the result is cached as JSONL under :func:`cache_dir`,
keyed by the Python build, so it is built once (a few seconds) per Python.
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
import tempfile
import time

from llmkit._io import atomic_write_text
from llmkit.data.documents import Corpus, CorpusError, Document

_log = logging.getLogger(__name__)

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

# Memory addresses differ on every run (ASLR): `<object at 0x7f12ab34>`, ctypes' `<PyDLL 'x', handle 7f12ab34>`.
_ADDRESSES = (
    (re.compile(r" at 0x[0-9A-Fa-f]+"), " at 0x..."),
    (re.compile(r", handle [0-9A-Fa-f]+>"), ", handle ...>"),
)
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
    """Write the JSONL cache atomically (readers see the old file or the new one)."""
    atomic_write_text(path, "".join(json.dumps({"id": d.id, "text": d.text}, ensure_ascii=False) + "\n" for d in docs))
