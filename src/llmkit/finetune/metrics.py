"""Classification metrics: confusion matrix, accuracy, macro-F1, a per-class report.

The definitions follow scikit-learn's, and the tests check them against it on random cases
(scikit-learn is a test-time dependency only):

- ``confusion_matrix``: rows are true classes, columns predicted classes.
- precision ``tp / (tp + fp)``, recall ``tp / (tp + fn)``, F1 ``2 tp / (2 tp + fp + fn)``;
  a zero denominator gives 0 (``zero_division=0``).
- ``macro_f1`` is ``f1_score(y_true, y_pred, average="macro", zero_division=0)``: the mean F1
  over the classes that occur in ``y_true`` or ``y_pred``. A class that is neither true nor
  predicted anywhere is left out of the mean (it has nothing to score), so ``macro_f1`` can
  differ from the mean of :func:`per_class_report`'s F1 column, which lists every class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "ClassScores", "ClassificationReport", "accuracy", "classification_report", "confusion_matrix",
    "macro_f1", "per_class_report",
]


@dataclass
class ClassScores:
    """One class's scores; ``support`` is its number of true examples."""

    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class ClassificationReport:
    """Everything a classifier evaluation reports; :meth:`to_dict` is JSON-ready."""

    accuracy: float
    macro_f1: float
    confusion: list[list[int]]
    """``confusion[t][p]``: examples of true class ``t`` predicted as ``p``."""
    classes: list[str]
    per_class: list[ClassScores]

    def to_dict(self) -> dict:
        """Plain JSON types only (floats, ints, strings, lists, dicts)."""
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "classes": list(self.classes),
            "confusion": [list(row) for row in self.confusion],
            "per_class": [asdict(s) for s in self.per_class],
        }

    def format_table(self) -> str:
        """A plain-text table: per-class scores, accuracy and macro-F1, then the confusion matrix."""
        n = sum(s.support for s in self.per_class)
        width = max(12, *(len(c) for c in self.classes))
        lines = [f"{'class':<{width}}  precision  recall     f1  support"]
        for s in self.per_class:
            lines.append(f"{s.name:<{width}}  {s.precision:9.3f}  {s.recall:6.3f}  {s.f1:5.3f}  {s.support:7d}")
        lines.append(f"{'accuracy':<{width}}  {'':9}  {'':6}  {self.accuracy:5.3f}  {n:7d}")
        lines.append(f"{'macro-F1':<{width}}  {'':9}  {'':6}  {self.macro_f1:5.3f}  {n:7d}")
        lines += ["", "confusion matrix (rows: true, columns: predicted)"]
        cell = max(5, *(len(str(v)) for row in self.confusion for v in row), *(len(c) for c in self.classes))
        lines.append(f"{'':<{width}}  " + " ".join(f"{c:>{cell}}" for c in self.classes))
        for name, row in zip(self.classes, self.confusion):
            lines.append(f"{name:<{width}}  " + " ".join(f"{v:>{cell}d}" for v in row))
        return "\n".join(lines)


def _check(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Both label sequences as int64 arrays, checked for equal length and (if given) range."""
    t = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    if n_classes is not None:
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        for name, a in (("y_true", t), ("y_pred", p)):
            if a.size and (a.min() < 0 or a.max() >= n_classes):
                bad = a[(a < 0) | (a >= n_classes)][0]
                raise ValueError(f"{name} holds label {bad}, outside 0..{n_classes - 1}")
    return t, p


def _confusion(t: np.ndarray, p: np.ndarray, n_classes: int) -> np.ndarray:
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> list[list[int]]:
    """``(n_classes, n_classes)`` counts: row = true class, column = predicted class."""
    t, p = _check(y_true, y_pred, n_classes)
    return _confusion(t, p, n_classes).tolist()


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """The fraction of predictions equal to the true label."""
    t, p = _check(y_true, y_pred)
    if t.size == 0:
        raise ValueError("accuracy of no examples is undefined")
    return float(np.mean(t == p))


def _scores(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall, F1 and support from a confusion matrix (0 where 0/0)."""
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)  # tp + fp
    support = cm.sum(axis=1)  # tp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = predicted + support  # 2 tp + fp + fn
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
    return precision, recall, f1, support


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Mean F1 over the classes present in ``y_true`` or ``y_pred`` (scikit-learn's macro, zero_division=0)."""
    t, p = _check(y_true, y_pred)
    if t.size == 0:
        raise ValueError("macro-F1 of no examples is undefined")
    if min(t.min(), p.min()) < 0:
        raise ValueError("labels must be >= 0")
    n = int(max(t.max(), p.max())) + 1
    cm = _confusion(t, p, n)
    _, _, f1, _ = _scores(cm)
    present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    return float(np.mean(f1[present]))


def per_class_report(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]) -> list[ClassScores]:
    """Precision, recall, F1 and support of every class (index ``i`` named ``classes[i]``)."""
    t, p = _check(y_true, y_pred, len(classes))
    precision, recall, f1, support = _scores(_confusion(t, p, len(classes)))
    return [
        ClassScores(str(name), float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
        for i, name in enumerate(classes)
    ]


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]) -> ClassificationReport:
    """Accuracy, macro-F1, the confusion matrix and per-class scores in one report."""
    t, p = _check(y_true, y_pred, len(classes))
    return ClassificationReport(
        accuracy=accuracy(t, p),
        macro_f1=macro_f1(t, p),
        confusion=confusion_matrix(t, p, len(classes)),
        classes=[str(c) for c in classes],
        per_class=per_class_report(t, p, classes),
    )
