"""Ignite metrics over ``(y_pred, y)`` batches: the toolbox figures and the plain binary scores.

``y_pred``: foreground probabilities in [0, 1] (not logits), shaped (B, 1, H, W) or (B, H, W); ``y``: masks
of the same shape (foreground ``> 0.5``). Lists of per-image tensors (MONAI's decollated batches) are
unrolled by ignite. Sums are all-reduced in ``compute()``, so the figures hold under distributed evaluation
too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import ignite.distributed as idist
import numpy as np
import torch
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced

from covseg.metrics.binary import binary_scores
from covseg.metrics.tables import TABLE_COLUMNS
from covseg.metrics.toolbox import CURVES, IMAGE_KEYS, THRESHOLDS, figures_from_sums, score_with_curves

PAPER_KEYS = tuple(k for _, k in TABLE_COLUMNS)
"""The paper-table figures: meanDic, meanSen, meanSpe, Sm, meanEm, MAE."""

BINARY_KEYS = ("dice", "sensitivity", "specificity", "precision", "iou", "mae")


def _as_maps(x: torch.Tensor | np.ndarray, what: str) -> np.ndarray:
    """(B, 1, H, W) or (B, H, W) tensor/array -> (B, H, W) float64 numpy."""
    a = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3:
        raise ValueError(f"{what} must be (B, 1, H, W) or (B, H, W), got shape {tuple(a.shape)}")
    return a.astype(np.float64, copy=False)


def _pairs(output: Sequence) -> list[tuple[np.ndarray, np.ndarray]]:
    y_pred, y = output[0], output[1]
    p, g = _as_maps(y_pred, "y_pred"), _as_maps(y, "y")
    if p.shape != g.shape:
        raise ValueError(f"y_pred shape {p.shape} differs from y shape {g.shape}")
    if p.size and (p.min() < 0.0 or p.max() > 1.0 or np.isnan(p).any()):
        raise ValueError("y_pred must hold probabilities in [0, 1] (apply a sigmoid to logits)")
    return [(p[i], g[i] > 0.5) for i in range(p.shape[0])]


def _all_reduce(a: np.ndarray) -> np.ndarray:
    if idist.get_world_size() == 1:
        return a
    t = idist.all_reduce(torch.as_tensor(a, dtype=torch.float64))
    return t.cpu().numpy()


class ToolboxMetrics(Metric):
    """The Inf-Net toolbox figures (:mod:`covseg.metrics.toolbox`) over all images seen in an epoch.

    ``compute()`` returns a dict (all figures, or only ``keys``); attached under ``name`` it is also flattened
    into ``engine.state.metrics``.
    """

    def __init__(self, keys: Sequence[str] | None = None, output_transform: Callable = lambda x: x,
                 device: str | torch.device = "cpu") -> None:
        self.keys = tuple(keys) if keys is not None else None
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._n = 0
        self._curve_sum = np.zeros((len(CURVES), THRESHOLDS.size))
        self._score_sum = np.zeros(len(IMAGE_KEYS))

    @reinit__is_reduced
    def update(self, output: Sequence) -> None:
        for p, g in _pairs(output):
            scores, curves = score_with_curves(p, g)
            self._n += 1
            self._curve_sum += curves
            self._score_sum += [scores[k] for k in IMAGE_KEYS]

    def _figures(self) -> dict[str, float]:
        n_scores = len(IMAGE_KEYS)
        flat = np.concatenate([[self._n], self._score_sum, self._curve_sum.ravel()])
        flat = _all_reduce(flat)
        n = int(round(flat[0]))
        if n == 0:
            raise NotComputableError(f"{type(self).__name__} needs at least one image before compute()")
        score_sum = dict(zip(IMAGE_KEYS, flat[1:1 + n_scores]))
        return figures_from_sums(flat[1 + n_scores:].reshape(self._curve_sum.shape), score_sum, n)

    def compute(self) -> dict[str, float]:
        figs = self._figures()
        return {k: figs[k] for k in self.keys} if self.keys is not None else figs


class PaperMetrics(ToolboxMetrics):
    """The paper-table figures: meanDic, meanSen, meanSpe, Sm, meanEm, MAE (toolbox conventions)."""

    def __init__(self, output_transform: Callable = lambda x: x, device: str | torch.device = "cpu") -> None:
        super().__init__(keys=PAPER_KEYS, output_transform=output_transform, device=device)


class ToolboxDice(ToolboxMetrics):
    """The toolbox's ``meanDic`` (Dice averaged over 256 thresholds, then images) as one float."""

    def __init__(self, output_transform: Callable = lambda x: x, device: str | torch.device = "cpu") -> None:
        super().__init__(keys=("meanDic",), output_transform=output_transform, device=device)

    def compute(self) -> float:  # type: ignore[override]
        return self._figures()["meanDic"]


class BinaryMetrics(Metric):
    """Per-image :func:`covseg.metrics.binary.binary_scores` (threshold 0.5), averaged over images.

    ``compute()`` returns ``{dice, sensitivity, specificity, precision, iou, mae}``.
    """

    def __init__(self, output_transform: Callable = lambda x: x, threshold: float = 0.5,
                 device: str | torch.device = "cpu") -> None:
        self.threshold = threshold
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._n = 0
        self._sum = np.zeros(len(BINARY_KEYS))

    @reinit__is_reduced
    def update(self, output: Sequence) -> None:
        for p, g in _pairs(output):
            s = binary_scores(p, g, threshold=self.threshold)
            self._n += 1
            self._sum += [s[k] for k in BINARY_KEYS]

    def compute(self) -> dict[str, float]:
        flat = _all_reduce(np.concatenate([[self._n], self._sum]))
        n = int(round(flat[0]))
        if n == 0:
            raise NotComputableError("BinaryMetrics needs at least one image before compute()")
        return {k: float(v) / n for k, v in zip(BINARY_KEYS, flat[1:])}
