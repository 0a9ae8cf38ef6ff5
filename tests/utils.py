"""Assertions shared by tests."""

from __future__ import annotations

import numpy as np


def assert_masks_agree(a: np.ndarray, b: np.ndarray, max_flip_fraction: float) -> float:
    """Assert two binary masks have the same shape and differ in at most ``max_flip_fraction`` of their voxels.

    For masks computed at different precisions (bf16 vs fp32 logits), where voxels whose probability lies near
    the threshold may flip; like-with-like comparisons use exact equality instead. Returns the flipped fraction.
    """
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    assert a.shape == b.shape, f"mask shapes differ: {a.shape} vs {b.shape}"
    flipped = int(np.count_nonzero(a != b))
    fraction = flipped / max(a.size, 1)
    assert fraction <= max_flip_fraction, (f"{flipped} of {a.size} voxels differ ({fraction:.2e} > "
                                           f"{max_flip_fraction:.2e})")
    return fraction
