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

The steps' parts live beside this module: the working grid in :mod:`covseg.transforms.lung_grid`, per-slice
morphology in :mod:`covseg.transforms.slice_morphology`, step 3 in :mod:`covseg.transforms.airway`, step 5 in
:mod:`covseg.transforms.lung_sides`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from covseg.transforms.airway import track_airway
from covseg.transforms.lung_grid import block_mean, upsample, working_factors
from covseg.transforms.lung_sides import LEFT_LUNG, RIGHT_LUNG, assign_sides
from covseg.transforms.slice_morphology import (
    SLICE4,
    border_connected_2d,
    closing_2d,
    crop_box,
    fill_holes_2d,
    largest_component,
    open_holes,
)

__all__ = ["RIGHT_LUNG", "LEFT_LUNG", "AIR_THRESHOLD_HU", "MIN_LUNG_SLICE_MM2", "lung_mask"]

AIR_THRESHOLD_HU = -320.0
"""Voxels below this are air-like (lung parenchyma, airways, outside air)."""

_ALWAYS_FILL_MM2 = 400.0  # per-slice holes up to this area are always filled (vessels, small lesions)
_MIN_LUNG_ML = 0.4  # components smaller than this are never a lung
MIN_LUNG_SLICE_MM2 = 500.0
"""A lung must show at least this area (5 cm^2) in some axial slice, else it is not reported."""
_GAS_MEDIAN_HU = -965.0  # interior median of pure gas (bowel, stomach); lung parenchyma is denser
_GAS_ANTERIOR_MEDIAN_HU = -900.0  # gas-like interior median, rejected when also anterior only
_GAS_POSTERIOR_REACH = 0.55  # lungs reach the posterior chest wall; anterior gas stays in front of this


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
    filled; a larger hole only if it is enclosed in 3D too (see :func:`open_holes`), and the closings
    never fill such an open hole either.
    """
    if not mask.any():
        return mask
    r = int(np.ceil(max(closing_mm, wide_mm, 0.0) / min(spacing_yx))) + 1
    box = crop_box(mask, (0, 0, 0))
    sub = np.pad(mask[box], ((0, 0), (r, r), (r, r)))
    closed = sub | closing_2d(sub, closing_mm, spacing_yx)
    if wide_mm > closing_mm:
        row = sub[:, :, ::-1] if medial > 0 else sub
        reach = np.logical_or.accumulate(row, axis=2)
        reach = reach[:, :, ::-1] if medial > 0 else reach
        closed |= closing_2d(sub, wide_mm, spacing_yx) & reach
    closed &= ~open_holes(sub, min_hole_px)
    filled = fill_holes_2d(closed)
    filled &= ~open_holes(closed, min_hole_px)
    out = np.zeros_like(mask)
    ys = slice(max(box[1].start - r, 0), min(box[1].stop + r, mask.shape[1]))
    xs = slice(max(box[2].start - r, 0), min(box[2].stop + r, mask.shape[2]))
    oy, ox = ys.start - (box[1].start - r), xs.start - (box[2].start - r)
    out[box[0], ys, xs] = filled[:, oy : oy + (ys.stop - ys.start), ox : ox + (xs.stop - xs.start)]
    return out


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
    size = np.bincount(lab.ravel(), minlength=n + 1)[1:]  # voxels per component
    ok = size * voxel_ml >= _MIN_LUNG_ML
    interior = ndi.binary_erosion(cand, SLICE4) & cand
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
    f = working_factors(hu.shape, (sx, sy, sz))
    low = block_mean(hu, f)
    wsp = (sx * f[2], sy * f[1], sz * f[0])
    spacing_zyx = np.array([wsp[2], wsp[1], wsp[0]])
    voxel_ml = float(np.prod(wsp)) / 1000.0

    air = low < threshold
    outside = border_connected_2d(air)
    inside = air & ~outside
    body = ~outside
    airway = track_airway(inside, low, body, wsp)
    cand = inside & ~airway

    body = largest_component(body)
    lungs = _select_lungs(cand, low, body, voxel_ml)
    if not lungs.any():
        return np.zeros(hu.shape[1:] if squeeze else hu.shape, np.uint8)

    # body midline over the slices that hold lung
    zs = np.nonzero(lungs.any(axis=(1, 2)))[0]
    bx = np.nonzero(body[zs].any(axis=(0, 1)))[0]
    mid_x = 0.5 * (bx.min() + bx.max()) if bx.size else lungs.shape[2] / 2.0
    sides = assign_sides(lungs, mid_x, spacing_zyx)

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
        outer = ndi.binary_dilation(m, SLICE4) & ~airway
        box = crop_box(outer, (0, 0, 0))
        interior = ndi.binary_erosion(m[box], SLICE4, border_value=1)
        band = outer[box] & ~interior
        full = tuple(slice(b.start * k, min(b.stop * k, n)) for b, k, n in zip(box, f, shape))
        fshape = tuple(sl.stop - sl.start for sl in full)
        sub = upsample(band, f, fshape) & (hu[full] < threshold)
        sub |= upsample(interior, f, fshape)
        sub = fill_holes_2d(sub, max_ratio=0.05, min_px=0)
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
