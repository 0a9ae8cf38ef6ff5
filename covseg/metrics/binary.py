"""Plain binary metrics of one prediction (a 2D slice or a whole volume) against its mask, at threshold 0.5.

Counted from the confusion matrix in slabs along the first axis, so a 512 x 512 x 300 volume needs only
boolean temporaries of one slab; MAE is summed without an ``abs(pred - gt)`` float copy.

Zero denominators take the "nothing to get wrong" value 1.0: both masks empty gives dice = iou = precision
= sensitivity = 1.0; no foreground in ``gt`` gives sensitivity 1.0 (and dice/iou 0.0 if something was
predicted); nothing predicted gives precision 1.0 (with dice/iou/sensitivity 0.0 if ``gt`` has foreground); an
all-foreground ``gt`` gives specificity 1.0. No value is ever NaN.
"""

from __future__ import annotations

import numpy as np

THRESHOLD = 0.5
_SLAB_VOXELS = 1 << 22  # ~4 M voxels per slab


def _fg(a: np.ndarray, threshold: float) -> np.ndarray:
    """Foreground of one slab: bool as is, floats ``>= threshold``, integers non-zero."""
    if a.dtype == bool:
        return a
    if np.issubdtype(a.dtype, np.floating):
        return a >= threshold
    return a != 0


def binary_scores(pred: np.ndarray, gt: np.ndarray, threshold: float = THRESHOLD) -> dict[str, float | int]:
    """Dice, sensitivity, specificity, precision, IoU and MAE of ``pred`` against ``gt`` (same shape).

    ``pred``: probabilities in [0, 1] (foreground where ``>= threshold``), a bool mask or an integer mask
    (non-zero = foreground). ``gt``: a mask (bool, integer non-zero, or float ``>= 0.5``). MAE is
    ``mean |pred - gt|`` on the probabilities as given (on the 0/1 mask for an integer ``pred``). Also returns
    the counts ``tp``, ``fp``, ``fn``, ``tn``. Empty masks: see the module docstring.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    if pred.size == 0:
        raise ValueError("empty arrays")
    prob = np.issubdtype(pred.dtype, np.floating)
    if prob:
        lo, hi = float(pred.min()), float(pred.max())
        if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
            raise ValueError(f"probabilities must lie in [0, 1], got {lo}..{hi} (logits?)")
    p2 = pred.reshape(pred.shape[0], -1) if pred.ndim > 1 else pred.reshape(1, -1)
    g2 = gt.reshape(p2.shape)
    step = max(1, _SLAB_VOXELS // max(1, p2.shape[1]))
    tp = n_pred = n_gt = 0
    p_sum = p_in_gt = 0.0
    for i in range(0, p2.shape[0], step):
        ps, gs = p2[i:i + step], g2[i:i + step]
        pb, gb = _fg(ps, threshold), _fg(gs, 0.5)
        tp += int(np.count_nonzero(pb & gb))
        n_pred += int(np.count_nonzero(pb))
        n_gt += int(np.count_nonzero(gb))
        if prob:
            p_sum += float(np.sum(ps, dtype=np.float64))
            p_in_gt += float(np.sum(ps, where=gb, dtype=np.float64))
    n = pred.size
    fp, fn = n_pred - tp, n_gt - tp
    tn = n - tp - fp - fn
    if not prob:  # pred is a mask: |pred - gt| counts the disagreements
        p_sum, p_in_gt = float(n_pred), float(tp)
    # sum |p - g| = sum_{g=0} p + sum_{g=1} (1 - p), valid as p lies in [0, 1]
    mae = (p_sum - 2.0 * p_in_gt + n_gt) / n

    def ratio(num: int, den: int) -> float:
        return num / den if den else 1.0

    return {
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "precision": ratio(tp, tp + fp),
        "iou": ratio(tp, tp + fp + fn),
        "mae": float(mae),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }
