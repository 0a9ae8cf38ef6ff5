"""Right and left lung: lung components assigned to a side of the body midline, joined lungs split apart."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from covseg.transforms.slice_morphology import SLICE4, crop_box

__all__ = ["LEFT_LUNG", "RIGHT_LUNG", "assign_sides"]

RIGHT_LUNG = 1
LEFT_LUNG = 2


def _split_joined(comp: np.ndarray, mid_x: float, spacing_zyx: np.ndarray, max_iter: int) -> np.ndarray | None:
    """Split a component spanning both sides: erode until two side-specific parts appear, then nearest seed.

    Returns a label map (1 right, 2 left) over ``comp``'s bounding box positions, or None if no split found.
    """
    box = crop_box(comp, (1, 1, 1))
    sub = comp[box]
    x0 = box[2].start
    eroded = sub
    for _ in range(max_iter):
        eroded = ndi.binary_erosion(eroded, SLICE4)
        if not eroded.any():
            return None
        lab, n = ndi.label(eroded)
        if n < 2:
            continue
        idx = np.arange(1, n + 1)
        sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
        xs = np.array([c[2] for c in ndi.center_of_mass(np.ones_like(lab), lab, idx)]) + x0
        big = sizes >= 0.05 * sizes.max()
        right = big & (xs < mid_x)
        left = big & (xs >= mid_x)
        if right.any() and left.any():
            seeds = np.zeros(sub.shape, np.uint8)
            seeds[np.isin(lab, idx[right])] = RIGHT_LUNG
            seeds[np.isin(lab, idx[left])] = LEFT_LUNG
            _, inds = ndi.distance_transform_edt(seeds == 0, sampling=spacing_zyx, return_indices=True)
            out = np.zeros(comp.shape, np.uint8)
            out[box] = np.where(sub, seeds[tuple(inds)], 0)
            return out
    return None


def _split_by_cut(comp: np.ndarray, mid_x: float) -> np.ndarray:
    """Fallback split: in each slice, cut at the x of minimum lung width near the midline."""
    out = np.zeros(comp.shape, np.uint8)
    nx = comp.shape[2]
    band = max(2, nx // 8)
    lo, hi = max(int(mid_x) - band, 0), min(int(mid_x) + band + 1, nx)
    for k in np.nonzero(comp.any(axis=(1, 2)))[0]:
        cols = comp[k].sum(axis=0)
        cut = lo + int(np.argmin(cols[lo:hi])) if hi > lo else int(mid_x)
        out[k, :, :cut][comp[k, :, :cut]] = RIGHT_LUNG
        out[k, :, cut:][comp[k, :, cut:]] = LEFT_LUNG
    return out


def assign_sides(lungs: np.ndarray, mid_x: float, spacing_zyx: np.ndarray) -> np.ndarray:
    """Label 3D components as right (x < midline) or left lung, splitting components that span both."""
    out = np.zeros(lungs.shape, np.uint8)
    lab, n = ndi.label(lungs)
    if n == 0:
        return out
    xs = np.arange(lungs.shape[2], dtype=np.float64)
    idx = np.arange(1, n + 1)
    count = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    n_right_x = int(np.count_nonzero(xs < mid_x))  # the columns right of the midline: x < mid_x
    right_frac = np.bincount(lab[:, :, :n_right_x].ravel(), minlength=n + 1)[1:] / np.maximum(count, 1)
    max_iter = max(2, int(round(12.0 / float(min(spacing_zyx[1:])))))
    for i, frac in zip(idx, right_frac):
        comp = lab == i
        if 0.15 < frac < 0.85 and count[i - 1] >= 0.2 * count.max():
            split = _split_joined(comp, mid_x, spacing_zyx, max_iter)
            if split is None:
                split = _split_by_cut(comp, mid_x)
            out[comp] = split[comp]
        else:
            out[comp] = RIGHT_LUNG if frac >= 0.5 else LEFT_LUNG
    return out
