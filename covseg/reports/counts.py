"""Voxel counts of a volume's lung and infection masks per axial slice, taken slice by slice.

The per-volume report, the slice table and the severity score all start from these counts. Counting slice by slice
keeps each temporary to one slice (a 512x512x300 volume's boolean copies are 78 MB each), which matters because the
report is built while the volume's pictures are drawn and its masks written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SliceCounts", "slice_counts"]


@dataclass(frozen=True)
class SliceCounts:
    """Per axial slice (arrays of length z): lung voxels (any label > 0), right (1) and left (2) lung voxels,
    infected voxels (> 0), and infected voxels in the right and in the left lung."""

    lung: np.ndarray
    right: np.ndarray
    left: np.ndarray
    infection: np.ndarray
    right_infection: np.ndarray
    left_infection: np.ndarray


def slice_counts(lung: np.ndarray, infection: np.ndarray) -> SliceCounts:
    """:class:`SliceCounts` of a ``[z, y, x]`` lung label map (1 right, 2 left) and infection mask (> 0)."""
    if lung.shape != infection.shape:
        raise ValueError(f"lung mask shape {lung.shape} differs from the infection mask's {infection.shape}")
    counts = np.zeros((6, lung.shape[0]), np.int64)
    for z, (lung_z, inf_z) in enumerate(zip(lung, infection)):
        inf_z = inf_z > 0
        right, left = lung_z == 1, lung_z == 2
        counts[:, z] = (np.count_nonzero(lung_z > 0), np.count_nonzero(right), np.count_nonzero(left),
                        np.count_nonzero(inf_z), np.count_nonzero(inf_z & right), np.count_nonzero(inf_z & left))
    return SliceCounts(*counts)
