"""Slice- and patient-level classification figures: AUC, accuracy, sensitivity, specificity, F1.

AUC is MONAI's :func:`monai.metrics.compute_roc_auc`; the thresholded figures count the positive class (COVID-19)
as ``score >= threshold``. Zero denominators give 0.0 (never NaN), and AUC with one class present is NaN.
:func:`auc_interval` is a bootstrap interval of the AUC that resamples whole groups (patients): slices of one
patient are not independent, so resampling slices would give too narrow an interval.
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


def rank_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """The same AUC as :func:`roc_auc` (ties count one half), from ranks (Mann-Whitney U): fast enough to be run
    thousands of times in :func:`auc_interval`. NaN when only one class is present."""
    from scipy.stats import rankdata

    positive = np.asarray(labels) == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return math.nan
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_interval(scores: Sequence[float], labels: Sequence[int], groups: Sequence[str] | None = None,
                 level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval (``level``) of :func:`roc_auc`, resampling ``groups`` with replacement within
    each class of group (a group's class: the label most of its slices have), so every resample keeps the number
    of positive and negative groups; ``groups`` None: every slice is its own group. NaN, NaN without both classes.
    """
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    names = np.asarray(groups if groups is not None else np.arange(s.size)).astype(str)
    members = {g: np.flatnonzero(names == g) for g in dict.fromkeys(names.tolist())}
    by_class: dict[bool, list[np.ndarray]] = {True: [], False: []}
    for idx in members.values():
        by_class[bool(y[idx].mean() >= 0.5)].append(idx)
    if not by_class[True] or not by_class[False] or math.isnan(rank_auc(s, y)):
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        picked = np.concatenate([part[i] for part in by_class.values()
                                 for i in rng.integers(0, len(part), len(part))])
        values.append(rank_auc(s[picked], y[picked]))
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


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
