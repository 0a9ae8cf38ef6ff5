"""Per-class metrics of C-class predictions: each foreground class scored as its own binary problem.

:func:`class_scores` gives Dice / Sen / Spec / Prec / IoU / MAE per class from the confusion counts of
:func:`covseg.metrics.binary.binary_scores` (class probability maps at 0.5, or a label map by index);
:class:`ClassToolbox` gives the Inf-Net toolbox figures (meanDic, Sm, meanEm, MAE, ...) per class probability map.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from covseg.metrics.binary import binary_scores
from covseg.metrics.toolbox import ToolboxAccumulator

DEFAULT_CLASSES = ("background", "ggo", "consolidation")


def _class_names(num_classes: int, names: Sequence[str] | None) -> list[str]:
    if names is None:
        names = DEFAULT_CLASSES if num_classes == len(DEFAULT_CLASSES) else [f"class{c}" for c in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    return list(names)


def class_scores(pred: np.ndarray, gt: np.ndarray, num_classes: int = 3, names: Sequence[str] | None = None,
                 include_background: bool = False) -> dict[str, dict[str, float | int]]:
    """Binary scores per class of ``pred`` against the label map ``gt`` (integer class indices, any shape S).

    ``pred``: class probabilities (C, *S) (class c is foreground where its probability >= 0.5; MAE on that
    probability) or an integer label map of shape S (class c where ``pred == c``).
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    names = _class_names(num_classes, names)
    if np.issubdtype(pred.dtype, np.floating):
        if pred.shape != (num_classes, *gt.shape):
            raise ValueError(f"probabilities of shape {pred.shape} do not match {num_classes} classes x {gt.shape}")
        maps = [pred[c] for c in range(num_classes)]
    else:
        if pred.shape != gt.shape:
            raise ValueError(f"label map shape {pred.shape} differs from ground truth shape {gt.shape}")
        maps = [pred == c for c in range(num_classes)]
    first = 0 if include_background else 1
    return {names[c]: binary_scores(maps[c], gt == c) for c in range(first, num_classes)}


def class_scores_from_counts(counts: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Dice / Sen / Spec / Prec / IoU per class from summed ``tp/fp/fn/tn`` (e.g. over the slices of a volume)."""

    def ratio(num: float, den: float) -> float:
        return num / den if den else 1.0

    out = {}
    for name, c in counts.items():
        tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
        out[name] = {"dice": ratio(2 * tp, 2 * tp + fp + fn), "sensitivity": ratio(tp, tp + fn),
                     "specificity": ratio(tn, tn + fp), "precision": ratio(tp, tp + fp),
                     "iou": ratio(tp, tp + fp + fn)}
    return out


class ClassToolbox:
    """Toolbox figures per foreground class: :meth:`add` takes class probabilities (C, H, W) and a label map."""

    def __init__(self, num_classes: int = 3, names: Sequence[str] | None = None, keep_per_image: bool = False) -> None:
        self.names = _class_names(num_classes, names)
        self.accumulators = {n: ToolboxAccumulator(keep_per_image) for n in self.names[1:]}

    def add(self, probs: np.ndarray, gt: np.ndarray, name: str | None = None) -> dict[str, dict[str, float]]:
        """Score each foreground class map of one slice; returns the slice's scores per class."""
        if probs.shape != (len(self.names), *gt.shape):
            raise ValueError(f"probabilities of shape {probs.shape} do not match {len(self.names)} classes x "
                             f"{gt.shape}")
        return {n: acc.add(probs[c + 1], gt == c + 1, name) for c, (n, acc) in enumerate(self.accumulators.items())}

    def figures(self) -> dict[str, dict[str, float]]:
        """The set's figures per class (see :meth:`covseg.metrics.toolbox.ToolboxAccumulator.figures`)."""
        return {n: acc.figures() for n, acc in self.accumulators.items()}


def mean_foreground(figures: dict[str, dict[str, float]], key: str = "meanDic") -> float:
    """The mean of one figure over the classes of ``figures`` (the foreground classes)."""
    return float(np.mean([f[key] for f in figures.values()]))
