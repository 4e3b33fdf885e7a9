"""Cutting documents into chunks: by tokens (the embedder's), with overlap, along the text's own
boundaries. A document is first split into blocks at blank lines (paragraphs, code blocks,
pydoc's entries); a heading (Markdown ``#``, an underlined reST title, pydoc's upper-case section
names such as ``FUNCTIONS``) always starts a new chunk and names the section of the chunks after
it. Blocks are packed into chunks of at most ``max_tokens``; the next chunk repeats the last
blocks of the previous one, up to ``overlap`` tokens. A block longer than a chunk is cut at line
ends (and a line longer than a chunk at word ends). Every chunk is a contiguous span of its
document: its text is ``document.text[start:end]``, and it knows its lines."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llmkit.rag.ingest import Document

__all__ = ["Chunk", "chunk_document", "word_count_tokens"]

_BLANK = re.compile(r"\n[ \t]*\n")
_PYDOC_SECTION = re.compile(r"^[A-Z][A-Z ]{2,}$")
_RST_UNDERLINE = re.compile(r"^([=\-~^*#+])\1{2,}\s*$")


@dataclass
class Chunk:
    doc_id: str
    title: str
    section: str
    text: str
    start: int
    """Character offsets of the chunk in its document: text == document.text[start:end]."""
    end: int
    line_start: int
    """1-based, inclusive."""
    line_end: int

    def cite(self) -> str:
        """``json (lines 12-30)``: where a citation points."""
        return f"{self.doc_id} (lines {self.line_start}-{self.line_end})"


def word_count_tokens(texts: Sequence[str]) -> list[int]:
    """A stand-in token count (words and punctuation marks), for when no tokenizer is at hand."""
    return [len(re.findall(r"\w+|[^\w\s]", t)) for t in texts]


def _heading(block: str) -> str | None:
    lines = [line for line in block.split("\n") if line.strip()]
    if not lines:
        return None
    first = lines[0].strip()
    if first.startswith("#") and len(lines) == 1:
        return first.lstrip("#").strip() or None
    if len(lines) >= 2 and _RST_UNDERLINE.match(lines[1].strip()) and len(lines[1].strip()) >= len(first):
        return first
    if len(lines) >= 2 and _RST_UNDERLINE.match(first) and len(lines) >= 3 and _RST_UNDERLINE.match(lines[2].strip()):
        return lines[1].strip()  # an overlined title
    if _PYDOC_SECTION.match(lines[0]) and not lines[0].startswith(" "):
        return first  # pydoc: NAME, DESCRIPTION, CLASSES, FUNCTIONS, DATA ... at column 0
    return None


def _blocks(text: str) -> list[tuple[int, int]]:
    """(start, end) of the blank-line-separated blocks, whitespace-only ones dropped."""
    out, pos = [], 0
    for m in _BLANK.finditer(text):
        if text[pos : m.start()].strip():
            out.append((pos, m.start()))
        pos = m.end()
    if text[pos:].strip():
        out.append((pos, len(text)))
    return out


def _split_long(text: str, start: int, end: int, max_tokens: int, count: Callable) -> list[tuple[int, int]]:
    """Cut the span [start, end) into pieces of at most ``max_tokens``: at line ends, then words."""
    pieces: list[tuple[int, int]] = []
    line_spans, pos = [], start
    for line in text[start:end].split("\n"):
        line_spans.append((pos, pos + len(line)))
        pos += len(line) + 1
    sizes = count([text[a:b] for a, b in line_spans])
    cur_a, cur_n = None, 0
    for (a, b), n in zip(line_spans, sizes):
        if n > max_tokens:  # one very long line: by words
            if cur_a is not None:
                pieces.append((cur_a, a - 1 if a > cur_a else a))
                cur_a, cur_n = None, 0
            pieces += _split_words(text, a, b, max_tokens, count)
            continue
        if cur_a is not None and cur_n + n > max_tokens:
            pieces.append((cur_a, a - 1))
            cur_a, cur_n = None, 0
        if cur_a is None:
            cur_a = a
        cur_n += n
    if cur_a is not None:
        pieces.append((cur_a, end))
    return [(a, b) for a, b in pieces if text[a:b].strip()]


def _split_words(text: str, start: int, end: int, max_tokens: int, count: Callable) -> list[tuple[int, int]]:
    words = [(m.start() + start, m.end() + start) for m in re.finditer(r"\S+", text[start:end])]
    pieces, i = [], 0
    sizes = count([text[a:b] for a, b in words])
    while i < len(words):
        j, n = i, 0
        while j < len(words) and (j == i or n + sizes[j] <= max_tokens):
            n += sizes[j]
            j += 1
        pieces.append((words[i][0], words[j - 1][1]))
        i = j
    return pieces


def chunk_document(doc: Document, count_tokens: Callable[[Sequence[str]], list[int]] = word_count_tokens, *,
                   max_tokens: int = 200, overlap: int = 40, min_tokens: int = 32) -> list[Chunk]:
    """``doc`` as chunks (see the module docstring). ``count_tokens`` counts a batch of texts.
    A heading starts a new chunk unless the current one is still under ``min_tokens`` (then
    the short section, e.g. pydoc's NAME, joins the next)."""
    if max_tokens < 8 or not 0 <= overlap < max_tokens // 2:
        raise ValueError("max_tokens must be >= 8 and overlap in [0, max_tokens / 2)")
    text = doc.text
    spans = _blocks(text)
    sizes = count_tokens([text[a:b] for a, b in spans])
    units: list[tuple[int, int, int, str | None]] = []  # (start, end, tokens, heading or None)
    for (a, b), n in zip(spans, sizes):
        head = _heading(text[a:b])
        if n <= max_tokens:
            units.append((a, b, n, head))
        else:
            parts = _split_long(text, a, b, max_tokens, count_tokens)
            for k, ((pa, pb), pn) in enumerate(zip(parts, count_tokens([text[pa:pb] for pa, pb in parts]))):
                units.append((pa, pb, pn, head if k == 0 else None))
    chunks: list[Chunk] = []
    section = ""
    current: list[tuple[int, int, int, str | None]] = []
    cur_section = ""

    def emit():
        a, b = current[0][0], current[-1][1]
        chunks.append(Chunk(doc.id, doc.title, cur_section, text[a:b], a, b, text.count("\n", 0, a) + 1, text.count("\n", 0, b) + 1))

    for unit in units:
        a, b, n, head = unit
        if head is not None:
            if current and sum(u[2] for u in current) >= min_tokens:
                emit()
                current = []
            section = head
        total = sum(u[2] for u in current)
        if current and total + n > max_tokens:
            emit()
            keep, kept = [], 0  # the overlap: whole units from the end, up to `overlap` tokens, never the whole chunk
            for u in reversed(current[1:]):
                if kept + u[2] > overlap:
                    break
                keep.insert(0, u)
                kept += u[2]
            current = keep if kept + n <= max_tokens else []
        if not current:
            cur_section = section
        current.append(unit)
    if current:
        emit()
    return chunks
