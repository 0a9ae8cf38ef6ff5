"""Find the lungs' bounding box on an 8-bit grey CT slice of unknown window (no HU, no mask).

The classification sets (``covid-ct-cls``) are slices saved by their sources in whatever display window and
framing they used: whole thorax slices with air around the body, slices cropped to the body, panels cropped
from published figures. ``covseg diagnose`` shows the classifier lung-box crops of CT volumes
(:func:`covseg.engines.inference.diagnose.lung_crops`); :func:`grey_lung_box` gives such slices the same framing.

The rule: threshold the smoothed slice at Otsu's level; the body is the largest bright component and its convex
hull the thorax; the lungs are the (at most two) largest dark components that lie mostly inside the hull, each at
least 1 % of the slice. Dark regions outside the hull (air around the body) are dropped, while lungs that touch
the image edge (slices cropped tight) are kept. None when the lungs found cover too little of the slice to trust.
Plain functions, no MONAI.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi

from covseg.transforms.crop import Box, as_numpy
from covseg.transforms.slice_morphology import largest_component

__all__ = ["grey_lung_mask", "grey_lung_box"]

MIN_COMPONENT_SHARE = 0.01
"""A dark component smaller than this share of the slice is not a lung."""
INSIDE_HULL_SHARE = 0.6
"""A lung lies at least this share inside the body's convex hull."""


def _as_grey(img: Any) -> np.ndarray:
    a = np.squeeze(as_numpy(img).astype(np.float32, copy=False))
    if a.ndim != 2:
        raise ValueError(f"grey_lung_box expects one 2D slice, got shape {np.shape(img)}")
    return a


def grey_lung_mask(img: Any) -> np.ndarray:
    """Boolean ``[y, x]`` mask of the (at most two) lung regions of a grey slice (any range, 2D or 1-channel)."""
    from skimage.filters import threshold_otsu
    from skimage.morphology import convex_hull_image

    a = _as_grey(img)
    smooth = ndi.uniform_filter(a, 5)
    if float(smooth.max() - smooth.min()) <= 0:
        return np.zeros(a.shape, bool)
    level = threshold_otsu(smooth)
    body = largest_component(smooth >= level)
    if not body.any():
        return np.zeros(a.shape, bool)
    hull = convex_hull_image(body).astype(np.float32)
    dark, n_dark = ndi.label(ndi.binary_opening(smooth < level, iterations=2))
    if n_dark == 0:
        return np.zeros(a.shape, bool)
    labels = range(1, n_dark + 1)
    area = ndi.sum(np.ones(a.shape, np.float32), dark, labels)
    inside = ndi.sum(hull, dark, labels)
    lungs = [i + 1 for i in range(n_dark)
             if area[i] >= MIN_COMPONENT_SHARE * a.size and inside[i] >= INSIDE_HULL_SHARE * area[i]]
    lungs = sorted(lungs, key=lambda i: -area[i - 1])[:2]
    return np.isin(dark, lungs)


def grey_lung_box(img: Any, margin_frac: float = 0.02, min_share: float = 0.08) -> Box | None:
    """Lung bounding box ``(y0, y1, x0, x1)`` of a grey slice, grown by ``margin_frac`` of its longer side.

    None when the lungs found cover less than ``min_share`` of the slice (then keep the whole slice)."""
    mask = grey_lung_mask(img)
    if mask.sum() < min_share * mask.size:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    r = int(round(margin_frac * max(h, w)))
    return (max(int(rows[0]) - r, 0), min(int(rows[-1]) + 1 + r, h),
            max(int(cols[0]) - r, 0), min(int(cols[-1]) + 1 + r, w))
