"""Documents to index: files and directories (.txt .md .rst .html .py .jsonl .pdf), or a named
corpus (``pydocs``: the standard library's documentation, one document per module, id = the
module name). A file that cannot be read is reported with the reason and skipped; it never
stops the run."""

from __future__ import annotations

import hashlib
import html.parser
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SUFFIXES", "Document", "Skipped", "collect_documents", "corpus_documents", "read_file"]

SUFFIXES = (".txt", ".md", ".rst", ".html", ".htm", ".py", ".jsonl", ".pdf")
MAX_FILE_BYTES = 50 * 2**20


@dataclass
class Document:
    """One text to index. ``id`` is unique in an index (a path relative to what was given, a
    module name for pydocs, ``FILE#N`` for the Nth line of a JSONL file)."""

    id: str
    title: str
    text: str
    source: str = ""
    """Where it came from: a file path or ``corpus:NAME``."""
    sha256: str = field(default="")

    def __post_init__(self) -> None:
        if not self.sha256:
            self.sha256 = hashlib.sha256(self.text.encode("utf-8", errors="surrogatepass")).hexdigest()


@dataclass
class Skipped:
    path: str
    reason: str


def corpus_documents(name: str = "pydocs") -> list[Document]:
    """A corpus llmkit knows (see ``llmkit.data.corpora``) as documents, id = the corpus's own."""
    from llmkit.data.corpora import load_corpus

    return [Document(d.id, _pydoc_title(d.id, d.text), d.text, f"corpus:{name}") for d in load_corpus(name)]


def _pydoc_title(doc_id: str, text: str) -> str:
    """pydoc's NAME line (``json - JSON (JavaScript Object Notation) ...``), else the id."""
    lines = text.split("\n")
    if lines and lines[0].strip() == "NAME" and len(lines) > 1 and lines[1].strip():
        return lines[1].strip()
    return doc_id


def collect_documents(paths: Iterable[str | os.PathLike]) -> tuple[list[Document], list[Skipped]]:
    """Documents from files and directories (recursively, in sorted order; hidden files and
    folders skipped), and what could not be read, with why."""
    docs: list[Document] = []
    skipped: list[Skipped] = []
    for given in paths:
        root = Path(given)
        if not root.exists():
            skipped.append(Skipped(str(given), "no such file or directory"))
            continue
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and not _hidden(p.relative_to(root)))
        for f in files:
            rel = f.name if root.is_file() else str(f.relative_to(root))
            doc_id = rel if root.is_file() else f"{root.name}/{rel}"
            try:
                docs += read_file(f, doc_id)
            except (OSError, ValueError, UnicodeDecodeError) as e:
                skipped.append(Skipped(str(f), str(e).splitlines()[0] if str(e) else type(e).__name__))
    seen: set[str] = set()
    unique = []
    for d in docs:
        if d.id in seen:
            skipped.append(Skipped(d.source, f"a second document with the id {d.id!r}"))
            continue
        seen.add(d.id)
        unique.append(d)
    return unique, skipped


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") or part == "__pycache__" for part in rel.parts)


def read_file(path: Path, doc_id: str) -> list[Document]:
    """The documents in one file (a JSONL file holds one per line: ``{"text": ..., "title"?,
    "id"?}``). ValueError for an unsupported or empty file."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"unsupported file type {suffix or '(none)'} (supported: {' '.join(SUFFIXES)})")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"larger than {MAX_FILE_BYTES // 2**20} MiB")
    if suffix == ".pdf":
        text = _pdf_text(path)
    else:
        raw = path.read_bytes()
        text = raw.decode("utf-8", errors="replace")
        if "\x00" in text:
            raise ValueError("binary content (NUL bytes)")
    if suffix == ".jsonl":
        return _jsonl_documents(path, doc_id, text)
    if suffix in (".html", ".htm"):
        title, text = _html_text(text)
    else:
        title = _first_heading(text, suffix) or path.name
    if not text.strip():
        raise ValueError("no text")
    return [Document(doc_id, title, text, str(path))]


def _jsonl_documents(path: Path, doc_id: str, text: str) -> list[Document]:
    from llmkit._io import jsonl_objects

    out = []
    for n, row in jsonl_objects(text):
        if not isinstance(row.get("text"), str) or not row["text"].strip():
            raise ValueError(f"line {n}: needs a non-empty \"text\" string")
        rid = str(row.get("id", n))
        out.append(Document(f"{doc_id}#{rid}", str(row.get("title") or f"{path.name} {rid}"), row["text"], str(path)))
    if not out:
        raise ValueError("no rows")
    return out


def _first_heading(text: str, suffix: str) -> str | None:
    lines = text.split("\n")
    for i, line in enumerate(lines[:40]):
        s = line.strip()
        if suffix == ".md" and s.startswith("#"):
            return s.lstrip("#").strip() or None
        if suffix == ".rst" and s and i + 1 < len(lines) and set(lines[i + 1].strip()) <= set("=-~^*#") and len(lines[i + 1].strip()) >= len(s) > 0:
            return s
    return None


class _HTMLText(html.parser.HTMLParser):
    """Visible text of an HTML page, a blank line between blocks; the <title>."""

    BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "section", "article", "table", "ul", "ol"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "noscript"):
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag in self.BLOCKS:
            self.parts.append("\n\n" if tag.startswith("h") or tag == "p" else "\n")
            if tag.startswith("h") and len(tag) == 2:
                self.parts.append("#" * int(tag[1]) + " ")

    def handle_endtag(self, tag):
        if tag in ("script", "style", "noscript"):
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(data)


def _html_text(markup: str) -> tuple[str, str]:
    p = _HTMLText()
    p.feed(markup)
    p.close()
    text = "".join(p.parts)
    lines = [" ".join(line.split()) for line in text.split("\n")]
    out, blank = [], False
    for line in lines:
        if line:
            out.append(line)
            blank = False
        elif not blank:
            out.append("")
            blank = True
    return " ".join(p.title.split()) or (out[0] if out else ""), "\n".join(out).strip()


def _pdf_text(path: Path) -> str:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError:
        raise ValueError("reading PDF needs pypdf: pip install pypdf") from None
    try:
        reader = PdfReader(str(path))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, KeyError, ValueError, TypeError) as e:
        raise ValueError(f"unreadable PDF ({type(e).__name__}: {str(e)[:80]})") from None
    return "\n\n".join(p.strip() for p in pages if p.strip())
