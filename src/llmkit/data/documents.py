"""What a corpus is made of: documents, the corpus that orders them, and its error."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


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
