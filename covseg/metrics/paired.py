"""Paired comparison of two models scored on the same images: the mean difference and its bootstrap interval."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["paired_difference"]


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95, resamples: int = 10000,
                      seed: int = 0) -> dict[str, float]:
    """``b - a`` over paired per-image figures: the means, their difference, its percentile bootstrap interval
    (``level``; images resampled with replacement, the pairs kept) and the share of resamples where ``b``'s mean is
    higher. The images are taken as independent: where several come from one patient, the interval is too narrow.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size == 0:
        raise ValueError(f"need two non-empty lists of the same length, got {x.shape} and {y.shape}")
    d = y - x
    picks = np.random.default_rng(seed).integers(0, d.size, (resamples, d.size))
    means = d[picks].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"mean_a": float(x.mean()), "mean_b": float(y.mean()), "difference": float(d.mean()),
            "low": float(low), "high": float(high), "share_b_higher": float((means > 0).mean())}
