"""Tests for llmkit.finetune.metrics (against scikit-learn) and viz.confusion_matrix_png."""

from __future__ import annotations

import json
import random
import struct

import numpy as np
import pytest
from sklearn import metrics as sk

from llmkit.finetune.metrics import (
    ClassificationReport,
    ClassScores,
    accuracy,
    classification_report,
    confusion_matrix,
    macro_f1,
    per_class_report,
)
from llmkit.viz import confusion_matrix_png

# sklearn warns when a random case holds one label only; those cases are wanted here.
pytestmark = pytest.mark.filterwarnings("ignore:A single label was found")


def _random_cases(count: int = 300, seed: int = 0):
    """(y_true, y_pred, n_classes): sizes 1..60, 1..7 classes, often skewed or with absent classes."""
    rng = random.Random(seed)
    for _ in range(count):
        n_classes = rng.randint(1, 7)
        size = rng.randint(1, 60)
        used = rng.sample(range(n_classes), rng.randint(1, n_classes))  # some classes may never occur
        y_true = [rng.choice(used) for _ in range(size)]
        mode = rng.random()
        if mode < 0.2:
            y_pred = [used[0]] * size  # a degenerate classifier
        elif mode < 0.5:
            y_pred = [y if rng.random() < 0.7 else rng.randrange(n_classes) for y in y_true]  # mostly right
        else:
            y_pred = [rng.randrange(n_classes) for _ in range(size)]
        yield y_true, y_pred, n_classes


def test_confusion_matrix_matches_sklearn() -> None:
    for y_true, y_pred, n in _random_cases():
        expected = sk.confusion_matrix(y_true, y_pred, labels=list(range(n))).tolist()
        assert confusion_matrix(y_true, y_pred, n) == expected


def test_accuracy_matches_sklearn() -> None:
    for y_true, y_pred, _ in _random_cases():
        assert accuracy(y_true, y_pred) == sk.accuracy_score(y_true, y_pred)


def test_macro_f1_matches_sklearn_default_macro() -> None:
    """Including cases where a class is neither true nor predicted: sklearn leaves it out of the mean."""
    for y_true, y_pred, _ in _random_cases():
        expected = sk.f1_score(y_true, y_pred, average="macro", zero_division=0)
        assert macro_f1(y_true, y_pred) == expected  # same float operations, so bit-equal


def test_per_class_report_matches_sklearn() -> None:
    for y_true, y_pred, n in _random_cases():
        names = [f"c{i}" for i in range(n)]
        p, r, f, s = sk.precision_recall_fscore_support(y_true, y_pred, labels=list(range(n)), zero_division=0)
        got = per_class_report(y_true, y_pred, names)
        assert [c.name for c in got] == names
        assert [c.support for c in got] == s.tolist()
        assert [c.precision for c in got] == p.tolist()
        assert [c.recall for c in got] == r.tolist()
        assert [c.f1 for c in got] == f.tolist()


def test_absent_class_is_left_out_of_macro_but_listed_per_class() -> None:
    y_true, y_pred = [0, 0, 1, 1], [0, 1, 1, 1]  # class 2 never occurs
    report = classification_report(y_true, y_pred, ["a", "b", "c"])
    assert report.per_class[2] == ClassScores("c", 0.0, 0.0, 0.0, 0)
    assert report.macro_f1 == pytest.approx(np.mean([report.per_class[0].f1, report.per_class[1].f1]))
    assert report.macro_f1 == pytest.approx(sk.f1_score(y_true, y_pred, average="macro", zero_division=0))


def test_perfect_and_hopeless_predictions() -> None:
    assert macro_f1([0, 1, 2], [0, 1, 2]) == 1.0
    assert accuracy([0, 1, 2], [0, 1, 2]) == 1.0
    assert macro_f1([0, 0, 1, 1], [1, 1, 0, 0]) == 0.0
    assert accuracy([0, 0, 1, 1], [1, 1, 0, 0]) == 0.0


def test_report_to_dict_is_json_ready_and_consistent() -> None:
    y_true, y_pred = [0, 1, 2, 2, 1, 0, 2], [0, 2, 2, 2, 1, 1, 0]
    report = classification_report(y_true, y_pred, ["negative", "neutral", "positive"])
    assert isinstance(report, ClassificationReport)
    d = json.loads(json.dumps(report.to_dict()))
    assert d["classes"] == ["negative", "neutral", "positive"]
    assert d["confusion"] == sk.confusion_matrix(y_true, y_pred).tolist()
    assert d["accuracy"] == pytest.approx(sk.accuracy_score(y_true, y_pred))
    assert d["macro_f1"] == pytest.approx(sk.f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert [c["support"] for c in d["per_class"]] == [2, 2, 3]
    assert set(d["per_class"][0]) == {"name", "precision", "recall", "f1", "support"}


def test_format_table_lists_every_class_and_the_totals() -> None:
    report = classification_report([0, 1, 1, 2], [0, 1, 0, 2], ["business", "entertainment", "tech"])
    table = report.format_table()
    lines = table.splitlines()
    assert lines[0].split() == ["class", "precision", "recall", "f1", "support"]
    assert lines[1].split() == ["business", "0.500", "1.000", "0.667", "1"]
    assert any(line.split() == ["accuracy", "0.750", "4"] for line in lines)
    assert any(line.split()[:2] == ["macro-F1", f"{report.macro_f1:.3f}"] for line in lines)
    assert lines[-2].split() == ["entertainment", "1", "1", "0"]  # the confusion matrix row
    assert "rows: true, columns: predicted" in table


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: confusion_matrix([0, 1], [0], 2), "y_true has 2 labels but y_pred has 1"),
        (lambda: confusion_matrix([0, 3], [0, 1], 3), "y_true holds label 3, outside 0..2"),
        (lambda: confusion_matrix([0, 1], [0, -1], 3), "y_pred holds label -1"),
        (lambda: per_class_report([0, 2], [0, 1], ["a", "b"]), "outside 0..1"),
        (lambda: accuracy([], []), "no examples"),
        (lambda: macro_f1([], []), "no examples"),
    ],
)
def test_bad_input_raises_one_line_value_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- the PNG


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("normalize", [False, True])
def test_confusion_matrix_png_is_a_valid_png(tmp_path, normalize: bool) -> None:
    from PIL import Image

    matrix = [[50, 3, 0], [4, 40, 6], [1, 2, 30]]
    path = tmp_path / "figs" / "confusion.png"
    confusion_matrix_png(path, matrix, ["negative", "neutral", "positive"], title="sentiment", normalize=normalize)
    width, height = _png_size(path)
    with Image.open(path) as im:
        im.verify()  # checks the chunks' CRCs
    with Image.open(path) as im:
        assert im.size == (width, height)
        pixels = np.asarray(im.convert("RGB"))
    assert width > 200 and height > 200
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10  # something was drawn
    assert [p.name for p in path.parent.iterdir()] == ["confusion.png"]  # the atomic write left no temp file


def test_confusion_matrix_png_handles_an_empty_row(tmp_path) -> None:
    path = tmp_path / "c.png"
    confusion_matrix_png(path, [[0, 0], [2, 5]], ["a", "b"], title="t", normalize=True)
    _png_size(path)


def test_confusion_matrix_png_rejects_a_wrong_shape(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"shape \(2, 2\), expected \(3, 3\)"):
        confusion_matrix_png(tmp_path / "c.png", [[1, 2], [3, 4]], ["a", "b", "c"], title="t")
    assert not (tmp_path / "c.png").exists()
