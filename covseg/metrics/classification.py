"""Slice- and patient-level classification figures: AUC, accuracy, sensitivity, specificity, F1.

AUC is MONAI's :func:`monai.metrics.compute_roc_auc`; the thresholded figures count the positive class (COVID-19)
as ``score >= threshold``. Zero denominators give 0.0 (never NaN), and AUC with one class present is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (NaN when only one class is present)."""
    y = np.asarray(labels, dtype=np.int64)
    if y.size == 0 or y.min() == y.max():
        return math.nan
    from monai.metrics import compute_roc_auc

    return float(compute_roc_auc(torch.as_tensor(np.asarray(scores, dtype=np.float64)), torch.as_tensor(y)))


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def confusion_scores(predicted: Sequence[bool], labels: Sequence[int]) -> dict[str, float | int]:
    """Accuracy, sensitivity, specificity, precision and F1 of boolean decisions, plus the counts."""
    p = np.asarray(predicted, dtype=bool)
    y = np.asarray(labels).astype(bool)
    tp, fp = int((p & y).sum()), int((p & ~y).sum())
    fn, tn = int((~p & y).sum()), int((~p & ~y).sum())
    sen, prec = _ratio(tp, tp + fn), _ratio(tp, tp + fp)
    return {
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
        "sensitivity": sen,
        "specificity": _ratio(tn, tn + fp),
        "precision": prec,
        "f1": _ratio(2 * prec * sen, prec + sen),
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }


def classification_scores(scores: Sequence[float], labels: Sequence[int],
                          threshold: float = 0.5) -> dict[str, float | int]:
    """AUC plus :func:`confusion_scores` at ``score >= threshold``; ``n`` is the number of slices."""
    s = np.asarray(scores, dtype=np.float64)
    out: dict[str, float | int] = {"n": int(s.size), "auc": roc_auc(s, labels)}
    out.update(confusion_scores(s >= threshold, labels))
    return out
