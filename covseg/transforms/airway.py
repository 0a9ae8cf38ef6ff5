"""The trachea and main bronchi of a CT volume, found so that the lung mask can leave them out."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = ["track_airway"]


def track_airway(inside: np.ndarray, hu: np.ndarray, body: np.ndarray, spacing_xyz: Sequence[float]) -> np.ndarray:
    """Trachea and main bronchi, tracked down from the first trachea-like component near the top.

    A trachea-like component of an axial slice is small (20-700 mm^2), compact (bounding-box aspect at
    most 2.5, filling 40 % of it), dark (lumen below -900 HU, mean below -900 HU, or -650 HU for voxels
    coarser than 2.5 mm where partial volume lightens it) and within about 3 cm of the body midline.
    Tracking follows overlapping components of the next lower slice while they stay small; a seed is
    kept only if it stays a free tube for 3 slices (or to the bottom of the volume). On coarse grids,
    where the airway merges in-plane with a lung, its last free cross-section, moved along the
    airway's course, is carved out of the merged component for up to 45 mm while it stays mostly air;
    tracking stops where it does not (below the carina). Bronchi inside the lung become lung again
    with the per-slice hole filling.
    """
    sx, sy, sz = (float(v) for v in spacing_xyz)
    px_area = sx * sy
    coarse = max(sx, sy) > 2.5
    mean_hu = -650.0 if coarse else -900.0
    max_area = 700.0 / px_area
    min_area = 20.0 / px_area
    max_carve = max(1, int(45.0 / sz)) if coarse else 0
    nz = inside.shape[0]
    labels: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def slice_labels(k: int) -> tuple[np.ndarray, np.ndarray]:
        if k not in labels:
            lab, n = ndi.label(inside[k])
            labels[k] = (lab, np.bincount(lab.ravel(), minlength=n + 1)[1:])
        return labels[k]

    def seeds(k: int) -> np.ndarray | None:
        lab, areas = slice_labels(k)
        n = areas.size
        xs = np.nonzero(body[k].any(axis=0))[0]
        if n == 0 or xs.size == 0:
            return None
        mid_x = 0.5 * (xs.min() + xs.max())
        tol_px = max(30.0, 0.08 * (xs.max() - xs.min() + 1) * sx) / sx
        idx = np.arange(1, n + 1)
        means = ndi.mean(hu[k], lab, idx)
        mins = ndi.minimum(hu[k], lab, idx)
        ok = []
        for i, sl in enumerate(ndi.find_objects(lab)):
            if sl is None or not min_area <= areas[i] <= max_area or means[i] >= mean_hu or mins[i] >= -900.0:
                continue
            h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
            if max(h, w) > 2.5 * min(h, w) or areas[i] < 0.4 * h * w:
                continue
            if abs(0.5 * (sl[1].start + sl[1].stop - 1) - mid_x) <= tol_px:
                ok.append(i + 1)
        return np.isin(lab, ok) if ok else None

    def follow(k0: int, seed: np.ndarray) -> tuple[dict[int, np.ndarray], int]:
        run = {k0: seed}
        prev = ref = seed
        prev_area = float(seed.sum())
        track = [(k0, *ndi.center_of_mass(seed))]
        carved = 0
        free_count = 1
        for k in range(k0 - 1, -1, -1):
            lab, areas = slice_labels(k)
            grown = ndi.binary_dilation(prev)
            over = np.unique(lab[grown & (lab > 0)])
            over = over[over > 0]
            limit = min(max(1.6 * prev_area + 30.0 / px_area, 150.0 / px_area), max_area)
            small = [int(i) for i in over if areas[i - 1] <= limit]
            large = [int(i) for i in over if areas[i - 1] > limit]
            cur = np.isin(lab, small) if small else np.zeros_like(prev)
            free = float(cur.sum()) >= 0.5 * prev_area
            if large and not free and carved < max_carve:
                carve = _move_along(ref, track, k) & np.isin(lab, over)
                if carve.sum() >= 0.5 * ref.sum():
                    cur |= carve
                    carved += 1
            if not cur.any():
                return run, (free_count if k > 0 else max(free_count, 3))
            run[k] = cur
            prev = cur
            if free:
                free_count += 1
                carved = 0
                prev_area = float(max(areas[i - 1] for i in small))
                ref = cur
                track.append((k, *ndi.center_of_mass(cur)))
        return run, max(free_count, 3)  # reached the bottom of the volume

    airway = np.zeros_like(inside)
    k = nz - 1
    while k >= 0:  # superior (high z) to inferior
        seed = seeds(k)
        if seed is None:
            k -= 1
            continue
        run, free_count = follow(k, seed)
        if free_count >= 3:
            for kk, m in run.items():
                airway[kk] = m
            break
        k -= 1
    return airway


def _move_along(shape: np.ndarray, track: list[tuple[int, float, float]], k: int) -> np.ndarray:
    """Move the last free airway cross-section to slice ``k`` along its recent course (linear fit)."""
    pts = np.array(track[-6:], dtype=np.float64)
    if len(pts) < 2:
        return shape
    dz = k - pts[-1, 0]
    slope_y = float(np.clip(np.polyfit(pts[:, 0], pts[:, 1], 1)[0], -1.0, 1.0))
    slope_x = float(np.clip(np.polyfit(pts[:, 0], pts[:, 2], 1)[0], -1.0, 1.0))
    shift = (int(round(slope_y * dz)), int(round(slope_x * dz)))
    return np.roll(shape, shift, axis=(0, 1)) if shift != (0, 0) else shape
