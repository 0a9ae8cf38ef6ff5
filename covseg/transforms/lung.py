"""Automatic lung mask from a CT volume in Hounsfield units.

``lung_mask(hu_zyx, spacing_xyz)`` returns a ``uint8`` label map of the same shape: 0 background,
1 RIGHT lung, 2 LEFT lung. Arrays follow the covseg convention (``[z, y, x]`` re-oriented to LPS, so
patient right is low ``x`` and superior is high ``z``).

Steps (volumes over 4 M voxels are analysed on a block-averaged working grid of about 1.5 x 1.5 x 2.5 mm,
then the boundary is re-thresholded at full resolution):

1. air-like voxels ``hu < threshold`` (outside-field-of-view padding such as -2048 counts as air);
2. air connected to the border of each axial slice is outside the body and removed;
3. the trachea and main bronchi are tracked slice by slice from the top (small, round, very dark,
   near the body midline) and removed;
4. 3D connected components: large ones are kept, pure-gas ones (bowel, stomach) and small ones dropped;
5. right/left assignment by side of the body midline; a component spanning both sides (lungs touching
   at the anterior/posterior junction) is split by erosion until it separates (nearest-seed
   assignment), else by a per-slice minimum-width cut;
6. per lung, per axial slice: closing (8 mm everywhere, 20 mm lateral of the lung's medial edge, so
   consolidation at the chest wall comes in but the hilum and heart do not) and hole filling (large
   holes only when enclosed in 3D), so vessels, nodules and dense consolidation inside the lung are
   part of the mask; airways are removed again.

7. plausibility: a lung whose largest axial cross-section is under 5 cm^2 is dropped (bowel gas or air
   pockets in an abdomen-only scan are not lung).

A volume without lungs gives an all-zero mask (callers report "no lung found").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

__all__ = ["RIGHT_LUNG", "LEFT_LUNG", "AIR_THRESHOLD_HU", "MIN_LUNG_SLICE_MM2", "lung_mask"]

RIGHT_LUNG = 1
LEFT_LUNG = 2
AIR_THRESHOLD_HU = -320.0
"""Voxels below this are air-like (lung parenchyma, airways, outside air)."""

_PAD_HU = -1024.0  # everything below (e.g. -2048 outside the field of view) is treated as air
_WORK_MM = 1.5  # target in-plane spacing of the working grid for large volumes
_WORK_Z_MM = 2.5  # target slice spacing of the working grid for large volumes
_WORK_MAX_VOXELS = 4_000_000  # volumes up to this size are analysed at full resolution
_ALWAYS_FILL_MM2 = 400.0  # per-slice holes up to this area are always filled (vessels, small lesions)
_MIN_LUNG_ML = 0.4  # components smaller than this are never a lung
MIN_LUNG_SLICE_MM2 = 500.0
"""A lung must show at least this area (5 cm^2) in some axial slice, else it is not reported."""
_GAS_MEDIAN_HU = -965.0  # interior median of pure gas (bowel, stomach); lung parenchyma is denser
_GAS_ANTERIOR_MEDIAN_HU = -900.0  # gas-like interior median, rejected when also anterior only
_GAS_POSTERIOR_REACH = 0.55  # lungs reach the posterior chest wall; anterior gas stays in front of this

# in-plane (per axial slice) structuring elements for 3D arrays
_SLICE4 = np.zeros((3, 3, 3), bool)
_SLICE4[1] = ndi.generate_binary_structure(2, 1)
_SLICE8 = np.zeros((3, 3, 3), bool)
_SLICE8[1] = True


def _working_factors(shape: Sequence[int], spacing_xyz: Sequence[float]) -> tuple[int, int, int]:
    """Block sizes (z, y, x) of the working grid: 1 for small volumes, about 1.5-2 mm voxels for large ones."""
    if int(np.prod(shape)) <= _WORK_MAX_VOXELS:
        return 1, 1, 1
    sx, sy, sz = (float(s) for s in spacing_xyz)
    fx = max(1, int(_WORK_MM / sx + 0.5))
    fy = max(1, int(_WORK_MM / sy + 0.5))
    fz = max(1, int(_WORK_Z_MM / sz + 0.5))
    return fz, fy, fx


def _block_mean(a: np.ndarray, f: tuple[int, int, int]) -> np.ndarray:
    """float32 mean over ``f``-sized blocks of ``a`` clipped below at -1024 HU (NaN counts as air).

    Sums strided views (no full-size float copy); the array is edge-padded to whole blocks if needed.
    """
    if f == (1, 1, 1):
        return np.fmax(a, np.float32(_PAD_HU), dtype=np.float32)
    pad = [(0, (-n) % k) for n, k in zip(a.shape, f)]
    if any(p[1] for p in pad):
        a = np.pad(a, pad, mode="edge")
    out: np.ndarray | None = None
    for dz in range(f[0]):
        for dy in range(f[1]):
            for dx in range(f[2]):
                view = np.fmax(a[dz :: f[0], dy :: f[1], dx :: f[2]], np.float32(_PAD_HU), dtype=np.float32)
                if out is None:
                    out = view
                else:
                    out += view
    assert out is not None
    out /= float(np.prod(f))
    return out


def _upsample(low: np.ndarray, f: tuple[int, int, int], shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour upsampling by ``f`` (block repetition), cropped to ``shape``."""
    if f == (1, 1, 1):
        return low
    z, y, x = low.shape
    big = np.broadcast_to(low[:, None, :, None, :, None], (z, f[0], y, f[1], x, f[2]))
    return big.reshape(z * f[0], y * f[1], x * f[2])[: shape[0], : shape[1], : shape[2]]


def _border_connected_2d(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` connected, within their axial slice, to the slice's border."""
    lab, n = ndi.label(mask, structure=_SLICE8)
    if n == 0:
        return np.zeros_like(mask)
    border = np.zeros(n + 1, bool)
    for edge in (lab[:, 0, :], lab[:, -1, :], lab[:, :, 0], lab[:, :, -1]):
        border[np.unique(edge)] = True
    border[0] = False
    return border[lab]


def _fill_holes_2d(mask: np.ndarray, max_ratio: float | None = None, min_px: int = 0) -> np.ndarray:
    """Fill the holes of every axial slice (one labelling call for the whole stack).

    With ``max_ratio``, a hole larger than ``min_px`` is filled only if its area is at most ``max_ratio``
    times the mask's area in that slice: vessels and lesions inside a lung are filled, the liver dome
    inside a ring of lung base is not.
    """
    if not mask.any():
        return mask
    lab, n = ndi.label(~mask, structure=_SLICE8)
    if n == 0:
        return mask
    hole = np.ones(n + 1, bool)
    for edge in (lab[:, 0, :], lab[:, -1, :], lab[:, :, 0], lab[:, :, -1]):
        hole[np.unique(edge)] = False
    hole[0] = False
    if max_ratio is not None:
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        zs = np.array([sl[0].start if sl is not None else 0 for sl in ndi.find_objects(lab)], dtype=np.int64)
        area = mask.sum(axis=(1, 2))
        big = sizes[1:] > np.maximum(max_ratio * area[zs], min_px)
        hole[1:] &= ~big
    return mask | hole[lab]


def _crop_box(mask: np.ndarray, pad: Sequence[int]) -> tuple[slice, ...]:
    """Bounding box of ``mask`` grown by ``pad`` per axis (clipped to the array)."""
    idx = np.nonzero(mask)
    return tuple(slice(max(int(i.min()) - p, 0), min(int(i.max()) + p + 1, n)) for i, p, n in zip(idx, pad, mask.shape))


def _closing_2d(mask: np.ndarray, radius_mm: float, spacing_yx: tuple[float, float]) -> np.ndarray:
    """Per-slice closing with a disk of ``radius_mm`` (exact, via distance transforms).

    ``mask`` must have at least ``radius`` + 1 pixels of background around it in every slice.
    """
    if radius_mm <= 0 or not mask.any():
        return mask
    sampling = (1e6, float(spacing_yx[0]), float(spacing_yx[1]))  # no reach across slices
    dilated = ndi.distance_transform_edt(~mask, sampling=sampling) <= radius_mm
    return ndi.distance_transform_edt(dilated, sampling=sampling) > radius_mm


def _open_holes(mask: np.ndarray, min_px: int) -> np.ndarray:
    """Per-slice holes of ``mask`` larger than ``min_px`` that are not enclosed in 3D.

    A hole is open when the non-mask voxels it belongs to (3D connectivity) reach the border of the
    array, e.g. the liver dome seen as an island inside a ring of lung base; a lesion inside the lung
    is enclosed. The array must have background at its in-plane border.
    """
    holes = _fill_holes_2d(mask) & ~mask
    if not holes.any():
        return holes
    lab, n = ndi.label(holes, structure=_SLICE8)
    big = np.bincount(lab.ravel(), minlength=n + 1) > min_px
    big[0] = False
    if not big.any():
        return np.zeros_like(mask)
    rest, _ = ndi.label(np.pad(~mask, 1, constant_values=True))
    open3d = (rest == rest[0, 0, 0])[1:-1, 1:-1, 1:-1]
    reject = np.zeros(n + 1, bool)
    reject[np.unique(lab[open3d & big[lab]])] = True
    reject[0] = False
    return reject[lab]


def _close_fill(
    mask: np.ndarray,
    spacing_yx: tuple[float, float],
    closing_mm: float,
    wide_mm: float,
    medial: int,
    min_hole_px: int,
) -> np.ndarray:
    """Per-slice closing and hole filling of one lung (on its bounding box).

    The closing with ``closing_mm`` is kept everywhere; the wider one (``wide_mm``), which pulls large
    lesions at the chest wall into the lung, only lateral to the lung's medial edge in each image row
    (``medial`` = +1 when medial is towards high x, i.e. the right lung), so the hilum, heart and
    mediastinum concavities stay out. Holes up to ``min_hole_px`` (vessels, small lesions) are always
    filled; a larger hole only if it is enclosed in 3D too (see :func:`_open_holes`), and the closings
    never fill such an open hole either.
    """
    if not mask.any():
        return mask
    r = int(np.ceil(max(closing_mm, wide_mm, 0.0) / min(spacing_yx))) + 1
    box = _crop_box(mask, (0, 0, 0))
    sub = np.pad(mask[box], ((0, 0), (r, r), (r, r)))
    closed = sub | _closing_2d(sub, closing_mm, spacing_yx)
    if wide_mm > closing_mm:
        row = sub[:, :, ::-1] if medial > 0 else sub
        reach = np.logical_or.accumulate(row, axis=2)
        reach = reach[:, :, ::-1] if medial > 0 else reach
        closed |= _closing_2d(sub, wide_mm, spacing_yx) & reach
    closed &= ~_open_holes(sub, min_hole_px)
    filled = _fill_holes_2d(closed)
    filled &= ~_open_holes(closed, min_hole_px)
    out = np.zeros_like(mask)
    ys = slice(max(box[1].start - r, 0), min(box[1].stop + r, mask.shape[1]))
    xs = slice(max(box[2].start - r, 0), min(box[2].stop + r, mask.shape[2]))
    oy, ox = ys.start - (box[1].start - r), xs.start - (box[2].start - r)
    out[box[0], ys, xs] = filled[:, oy : oy + (ys.stop - ys.start), ox : ox + (xs.stop - xs.start)]
    return out


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 3D connected component of ``mask`` (the body, without the table and loose objects)."""
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _select_lungs(cand: np.ndarray, low: np.ndarray, body: np.ndarray, voxel_ml: float) -> np.ndarray:
    """Keep the lung components of the inside-the-body air: large, not pure gas, not bowel gas.

    A component is gas (bowel, stomach), not lung, when its interior (one voxel in from the border)
    has a median below -965 HU, or a median below -900 HU while it stays in the anterior 55 % of the
    body (gas rises anteriorly in a supine patient; the lungs reach the posterior chest wall).
    Kept components must hold ``_MIN_LUNG_ML`` and 5 % of the largest kept one; those under 20 % (fragments
    of a lung broken up by consolidation) only within the z-range of the larger ones.
    """
    lab, n = ndi.label(cand)
    if n == 0:
        return np.zeros_like(cand)
    idx = np.arange(1, n + 1)
    size = ndi.sum_labels(np.ones_like(lab), lab, idx)
    ok = size * voxel_ml >= _MIN_LUNG_ML
    interior = ndi.binary_erosion(cand, _SLICE4) & cand
    objs = ndi.find_objects(lab)
    ys_body = np.nonzero(body.any(axis=2))  # (z, y) pairs of body rows
    body_rows = np.zeros(body.shape[:2], bool)
    body_rows[ys_body] = True
    for i in np.nonzero(ok)[0]:
        sl = objs[i]
        comp = lab[sl] == i + 1
        inner = comp & interior[sl]
        vals = low[sl][inner] if inner.sum() >= 5 else low[sl][comp]
        med = float(np.median(vals))
        if med < _GAS_MEDIAN_HU:
            ok[i] = False
            continue
        if med < _GAS_ANTERIOR_MEDIAN_HU:
            rows = body_rows[sl[0]].any(axis=0)
            yb = np.nonzero(rows)[0]
            if yb.size:
                y_post = sl[1].start + int(np.nonzero(comp.any(axis=(0, 2)))[0].max())
                reach = (y_post - yb.min()) / max(yb.max() - yb.min(), 1)
                if reach < _GAS_POSTERIOR_REACH:
                    ok[i] = False
    if not ok.any():
        return np.zeros_like(cand)
    ok &= size >= 0.05 * size[ok].max()
    # fragments (under 20 % of the largest) must lie within the z-range of the main components
    main = ok & (size >= 0.2 * size[ok].max())
    z_lo = min(objs[i][0].start for i in np.nonzero(main)[0])
    z_hi = max(objs[i][0].stop for i in np.nonzero(main)[0])
    for i in np.nonzero(ok & ~main)[0]:
        if objs[i][0].start < z_lo or objs[i][0].stop > z_hi:
            ok[i] = False
    return np.isin(lab, idx[ok])


def _track_airway(inside: np.ndarray, hu: np.ndarray, body: np.ndarray, spacing_xyz: Sequence[float]) -> np.ndarray:
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
            labels[k] = (lab, ndi.sum_labels(np.ones_like(lab), lab, np.arange(1, n + 1)))
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


def _split_joined(comp: np.ndarray, mid_x: float, spacing_zyx: np.ndarray, max_iter: int) -> np.ndarray | None:
    """Split a component spanning both sides: erode until two side-specific parts appear, then nearest seed.

    Returns a label map (1 right, 2 left) over ``comp``'s bounding box positions, or None if no split found.
    """
    box = _crop_box(comp, (1, 1, 1))
    sub = comp[box]
    x0 = box[2].start
    eroded = sub
    for _ in range(max_iter):
        eroded = ndi.binary_erosion(eroded, _SLICE4)
        if not eroded.any():
            return None
        lab, n = ndi.label(eroded)
        if n < 2:
            continue
        idx = np.arange(1, n + 1)
        sizes = ndi.sum_labels(np.ones_like(lab), lab, idx)
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


def _assign_sides(lungs: np.ndarray, mid_x: float, spacing_zyx: np.ndarray) -> np.ndarray:
    """Label 3D components as right (x < midline) or left lung, splitting components that span both."""
    out = np.zeros(lungs.shape, np.uint8)
    lab, n = ndi.label(lungs)
    if n == 0:
        return out
    xs = np.arange(lungs.shape[2], dtype=np.float64)
    idx = np.arange(1, n + 1)
    count = ndi.sum_labels(np.ones_like(lab), lab, idx)
    xcount = np.broadcast_to(xs < mid_x, lungs.shape)
    right_frac = ndi.sum_labels(xcount, lab, idx) / np.maximum(count, 1)
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


def lung_mask(
    hu_zyx: np.ndarray,
    spacing_xyz: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    threshold: float = AIR_THRESHOLD_HU,
    closing_mm: float = 8.0,
    wide_closing_mm: float = 20.0,
) -> np.ndarray:
    """Lung label map of a CT volume: 0 background, 1 right lung, 2 left lung (``uint8``, same shape).

    ``hu_zyx`` is HU indexed ``[z, y, x]`` in LPS (a single 2D axial slice ``[y, x]`` is accepted too);
    ``spacing_xyz`` is the voxel size in mm (x, y, z). ``closing_mm`` is the radius of the per-slice
    closing applied everywhere, ``wide_closing_mm`` that of the closing applied lateral to each lung's
    medial edge only: it pulls dense lesions at the chest wall into the mask.
    """
    hu = np.asarray(hu_zyx)
    squeeze = hu.ndim == 2
    if squeeze:
        hu = hu[None]
    if hu.ndim != 3:
        raise ValueError(f"lung_mask expects a [z, y, x] volume, got shape {hu.shape}")
    if hu.size == 0:
        return np.zeros(hu.shape[1:] if squeeze else hu.shape, np.uint8)
    sx, sy, sz = (float(s) for s in spacing_xyz)
    f = _working_factors(hu.shape, (sx, sy, sz))
    low = _block_mean(hu, f)
    wsp = (sx * f[2], sy * f[1], sz * f[0])
    spacing_zyx = np.array([wsp[2], wsp[1], wsp[0]])
    voxel_ml = float(np.prod(wsp)) / 1000.0

    air = low < threshold
    outside = _border_connected_2d(air)
    inside = air & ~outside
    body = ~outside
    airway = _track_airway(inside, low, body, wsp)
    cand = inside & ~airway

    body = _largest_component(body)
    lungs = _select_lungs(cand, low, body, voxel_ml)
    if not lungs.any():
        return np.zeros(hu.shape[1:] if squeeze else hu.shape, np.uint8)

    # body midline over the slices that hold lung
    zs = np.nonzero(lungs.any(axis=(1, 2)))[0]
    bx = np.nonzero(body[zs].any(axis=(0, 1)))[0]
    mid_x = 0.5 * (bx.min() + bx.max()) if bx.size else lungs.shape[2] / 2.0
    sides = _assign_sides(lungs, mid_x, spacing_zyx)

    min_hole_px = int(round(_ALWAYS_FILL_MM2 / (wsp[0] * wsp[1])))
    low_lab = np.zeros(lungs.shape, np.uint8)
    for side, medial in ((RIGHT_LUNG, 1), (LEFT_LUNG, -1)):
        filled = _close_fill(sides == side, (wsp[1], wsp[0]), closing_mm, wide_closing_mm, medial, min_hole_px)
        low_lab[filled & body & ~airway & (low_lab == 0)] = side

    out = low_lab if f == (1, 1, 1) else _refine(low_lab, airway, hu, f, threshold)
    _drop_implausible(out, sx * sy)
    return out[0] if squeeze else out


def _drop_implausible(labels: np.ndarray, pixel_mm2: float) -> None:
    """Zero (in place) each lung whose largest axial cross-section is under ``MIN_LUNG_SLICE_MM2``."""
    for side in (RIGHT_LUNG, LEFT_LUNG):
        per_slice = (labels == side).reshape(labels.shape[0], -1).sum(axis=1)
        if 0 < per_slice.max() * pixel_mm2 < MIN_LUNG_SLICE_MM2:
            labels[labels == side] = 0


def _refine(
    low_lab: np.ndarray, airway: np.ndarray, hu: np.ndarray, f: tuple[int, int, int], threshold: float
) -> np.ndarray:
    """Full-resolution labels: interior from the working grid, boundary band re-thresholded at full res.

    The band is one working voxel either side of the working-grid boundary (in-plane); inside it a
    full-resolution voxel is lung if it is air-like, then small per-slice holes are filled.
    """
    shape = hu.shape
    out = np.zeros(shape, np.uint8)
    for side in (RIGHT_LUNG, LEFT_LUNG):
        m = low_lab == side
        if not m.any():
            continue
        outer = ndi.binary_dilation(m, _SLICE4) & ~airway
        box = _crop_box(outer, (0, 0, 0))
        interior = ndi.binary_erosion(m[box], _SLICE4, border_value=1)
        band = outer[box] & ~interior
        full = tuple(slice(b.start * k, min(b.stop * k, n)) for b, k, n in zip(box, f, shape))
        fshape = tuple(sl.stop - sl.start for sl in full)
        sub = _upsample(band, f, fshape) & (hu[full] < threshold)
        sub |= _upsample(interior, f, fshape)
        sub = _fill_holes_2d(sub, max_ratio=0.05, min_px=0)
        view = out[full]
        view[sub & (view == 0)] = side
    return out


def __getattr__(name: str) -> Any:
    """``LungMask`` / ``LungMaskd`` (MONAI transforms) live in :mod:`covseg.transforms.lung_transforms`, so that
    this module imports no MONAI: the CLI runs :func:`lung_mask` in a thread while MONAI is being imported."""
    if name in ("LungMask", "LungMaskd"):
        from covseg.transforms import lung_transforms

        return getattr(lung_transforms, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
