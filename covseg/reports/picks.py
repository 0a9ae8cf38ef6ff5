"""Which slices a picture shows: the highest-ranked ones, kept apart so that they show different places; and
whether a volume has slices enough for the pictures that cut across them (reformats, the per-slice curve)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["THROUGH_PLANE_MIN_SLICES", "spaced_top", "through_plane_views"]

THROUGH_PLANE_MIN_SLICES = 8
"""Fewer axial slices than this (e.g. a 2-slice test scan) give a coronal / sagittal reformat a few pixels high
and a per-slice curve of a few points: those pictures are not drawn, and the report says why."""


def through_plane_views(n_slices: int) -> bool:
    """Whether a volume of ``n_slices`` axial slices gets reformats and the per-slice curve."""
    return n_slices >= THROUGH_PLANE_MIN_SLICES


def spaced_top(z: Sequence[int], value: Sequence[float], n: int, gap: int) -> list[int]:
    """Up to ``n`` of the slices ``z``, by decreasing ``value`` (ties: the earlier entry), each at least ``gap``
    slices away from those already taken: the strongest slice of each part of the volume rather than one finding
    on neighbouring slices. Returned in the order they were taken."""
    order = np.argsort(-np.asarray(value, np.float64), kind="stable")
    taken: list[int] = []
    for i in order:
        if len(taken) >= n:
            break
        if all(abs(int(z[i]) - t) >= gap for t in taken):
            taken.append(int(z[i]))
    return taken
