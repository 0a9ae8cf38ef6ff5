"""Which slices a picture shows: the highest-ranked ones, kept apart so that they show different places."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["spaced_top"]


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
