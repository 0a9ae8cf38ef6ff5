"""Which slices a picture shows: the highest-ranked ones, kept apart so that they show different places (the
montage's slices, :func:`pick_slices`; the activation montage's); and whether a volume has slices enough for the
pictures that cut across them (reformats, the per-slice curve)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["THROUGH_PLANE_MIN_SLICES", "pick_slices", "spaced_top", "through_plane_views"]

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


def pick_slices(infection: np.ndarray, lung: np.ndarray | None = None, n: int = 12) -> tuple[list[int], set[int]]:
    """Axial slices for a montage: up to ``n // 2`` slices with most infection plus evenly spaced ones.

    The infected picks are taken by decreasing infection area, each at least the lung's z extent / ``n`` slices
    away from those already taken, so they show different lesions rather than one lesion on neighbouring slices.
    Evenly spaced slices fill the rest and cover the lung's z extent (the whole volume without lung). Returns the
    slices from superior to inferior and the set of those picked for their infection.
    """
    nz = infection.shape[0]
    n = max(1, min(int(n), nz))
    area = np.count_nonzero(np.asarray(infection).reshape(nz, -1), axis=1)
    if lung is not None and np.any(lung):
        held = np.nonzero(np.asarray(lung).reshape(nz, -1).any(axis=1))[0]
        lo, hi = int(held[0]), int(held[-1])
    else:
        lo, hi = 0, nz - 1
    gap = max(1, (hi - lo + 1) // n)
    infected = np.nonzero(area)[0]
    top = spaced_top(infected, area[infected], n // 2, gap)
    chosen = set(top)
    free = [z for z in range(lo, hi + 1) if z not in chosen] or [z for z in range(nz) if z not in chosen]
    for target in np.linspace(lo, hi, n - len(top)) if n > len(top) else []:
        if not free:
            break
        z = min(free, key=lambda f: (abs(f - target), f))  # nearest slice not yet taken
        chosen.add(z)
        free.remove(z)
    return sorted(chosen, reverse=True), set(top)
