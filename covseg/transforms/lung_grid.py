"""The working grid of the lung mask: large volumes are analysed block-averaged, then brought back.

Volumes over ``WORK_MAX_VOXELS`` voxels get blocks of about ``WORK_MM`` in-plane and ``WORK_Z_MM`` between slices
(:func:`working_factors`); :func:`block_mean` averages HU over the blocks, :func:`upsample` repeats a working-grid
mask back to full resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["PAD_HU", "WORK_MAX_VOXELS", "WORK_MM", "WORK_Z_MM", "block_mean", "upsample", "working_factors"]

PAD_HU = -1024.0
"""Everything below (e.g. -2048 outside the field of view) is treated as air."""
WORK_MM = 1.5
"""Target in-plane spacing of the working grid for large volumes."""
WORK_Z_MM = 2.5
"""Target slice spacing of the working grid for large volumes."""
WORK_MAX_VOXELS = 4_000_000
"""Volumes up to this size are analysed at full resolution."""


def working_factors(shape: Sequence[int], spacing_xyz: Sequence[float]) -> tuple[int, int, int]:
    """Block sizes (z, y, x) of the working grid: 1 for small volumes, about 1.5-2 mm voxels for large ones."""
    if int(np.prod(shape)) <= WORK_MAX_VOXELS:
        return 1, 1, 1
    sx, sy, sz = (float(s) for s in spacing_xyz)
    fx = max(1, int(WORK_MM / sx + 0.5))
    fy = max(1, int(WORK_MM / sy + 0.5))
    fz = max(1, int(WORK_Z_MM / sz + 0.5))
    return fz, fy, fx


def block_mean(a: np.ndarray, f: tuple[int, int, int]) -> np.ndarray:
    """float32 mean over ``f``-sized blocks of ``a`` clipped below at -1024 HU (NaN counts as air).

    Sums strided views (no full-size float copy); the array is edge-padded to whole blocks if needed.
    """
    if f == (1, 1, 1):
        return np.fmax(a, np.float32(PAD_HU), dtype=np.float32)
    pad = [(0, (-n) % k) for n, k in zip(a.shape, f)]
    if any(p[1] for p in pad):
        a = np.pad(a, pad, mode="edge")
    out: np.ndarray | None = None
    for dz in range(f[0]):
        for dy in range(f[1]):
            for dx in range(f[2]):
                view = np.fmax(a[dz :: f[0], dy :: f[1], dx :: f[2]], np.float32(PAD_HU), dtype=np.float32)
                if out is None:
                    out = view
                else:
                    out += view
    assert out is not None
    out /= float(np.prod(f))
    return out


def upsample(low: np.ndarray, f: tuple[int, int, int], shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour upsampling by ``f`` (block repetition), cropped to ``shape``."""
    if f == (1, 1, 1):
        return low
    z, y, x = low.shape
    big = np.broadcast_to(low[:, None, :, None, :, None], (z, f[0], y, f[1], x, f[2]))
    return big.reshape(z * f[0], y * f[1], x * f[2])[: shape[0], : shape[1], : shape[2]]
