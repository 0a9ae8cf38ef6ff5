"""Strip non-lung regions of an axial slice: crop to the lung bounding box, and paste back exactly.

COVID-SemiSeg training slices are lung bounding boxes, not the whole thorax: the lungs touch the image
edge on most sides of the labelled / test slices (median margin 0 px, 90th percentile 7 px) and sit
7-12 px in from it on the unlabelled ones. ``DEFAULT_MARGIN_PX = 5`` (3.5 mm at 0.7 mm pixels;
``margin_px(spacing)`` converts for other pixel sizes) mimics that look while keeping a little room
for subpleural lesions (see ``docs/windowing.md``).

A ``Box`` is ``(y0, y1, x0, x1)``, half-open, on the last two axes; arrays may be 2D ``[y, x]`` or
channel-first ``[c, y, x]`` (any leading axes), numpy or torch. Plain functions, no MONAI (``covseg infer`` imports
this module before its first slice); their MONAI transforms are in ``crop_transforms``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "Box",
    "DEFAULT_MARGIN_PX",
    "DEFAULT_MARGIN_MM",
    "margin_px",
    "lung_box",
    "crop_to_box",
    "paste_from_box",
]

Box = tuple[int, int, int, int]
DEFAULT_MARGIN_PX = 5
DEFAULT_MARGIN_MM = 3.5
"""``DEFAULT_MARGIN_PX`` in mm at the 0.7 mm pixels of a typical 512 x 512 chest slice."""


def margin_px(spacing_xyz: Sequence[float], margin_mm: float = DEFAULT_MARGIN_MM) -> int:
    """A margin of ``margin_mm`` in pixels of a slice with in-plane spacing ``spacing_xyz[:2]`` (mm)."""
    return max(int(round(margin_mm / max(min(float(spacing_xyz[0]), float(spacing_xyz[1])), 1e-6))), 0)


def as_numpy(x: Any) -> np.ndarray:
    """``x`` (numpy or torch, any device) as a numpy array."""
    return np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)


def lung_box(mask_slice: Any, margin_px: int = DEFAULT_MARGIN_PX) -> Box | None:
    """Bounding box ``(y0, y1, x0, x1)`` of ``mask_slice > 0`` grown by ``margin_px``, clipped to the slice.

    ``mask_slice`` is ``[y, x]`` or ``[c, y, x]`` (channels are merged). None when the slice has no lung.
    """
    m = as_numpy(mask_slice) > 0
    if m.ndim < 2:
        raise ValueError(f"lung_box expects a [.., y, x] mask, got shape {m.shape}")
    if m.ndim > 2:
        m = m.reshape(-1, *m.shape[-2:]).any(axis=0)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(m.any(axis=0))
    h, w = m.shape
    r = max(int(margin_px), 0)
    return (
        max(int(rows[0]) - r, 0),
        min(int(rows[-1]) + 1 + r, h),
        max(int(cols[0]) - r, 0),
        min(int(cols[-1]) + 1 + r, w),
    )


def crop_to_box(img: Any, box: Box) -> Any:
    """``img[..., y0:y1, x0:x1]`` (numpy or torch, a copy)."""
    y0, y1, x0, x1 = (int(v) for v in box)
    if not (0 <= y0 < y1 and 0 <= x0 < x1):
        raise ValueError(f"invalid box {box}")
    out = img[..., y0:y1, x0:x1]
    return out.clone() if hasattr(out, "clone") else np.array(out, copy=True)


def paste_from_box(patch: Any, box: Box, shape: Sequence[int], fill: float = 0) -> Any:
    """Inverse of :func:`crop_to_box`: an array of spatial ``shape`` filled with ``fill``, ``patch`` at ``box``.

    ``shape`` is the original ``(h, w)`` (or a full shape whose last two entries are used); leading axes
    and dtype come from ``patch``. ``paste_from_box(crop_to_box(x, b), b, x.shape)`` equals ``x`` inside
    the box and ``fill`` outside.
    """
    y0, y1, x0, x1 = (int(v) for v in box)
    h, w = int(shape[-2]), int(shape[-1])
    if tuple(patch.shape[-2:]) != (y1 - y0, x1 - x0):
        raise ValueError(f"patch of shape {tuple(patch.shape)} does not fit box {box}")
    if not (y0 >= 0 and y1 <= h and x0 >= 0 and x1 <= w):
        raise ValueError(f"box {box} outside the slice shape {(h, w)}")
    full = (*patch.shape[:-2], h, w)
    if hasattr(patch, "new_full"):  # torch
        out = patch.new_full(full, fill)
    else:
        out = np.full(full, fill, dtype=np.asarray(patch).dtype)
    out[..., y0:y1, x0:x1] = patch
    return out


def __getattr__(name: str) -> Any:
    """The MONAI transforms live in :mod:`covseg.transforms.crop_transforms`; their old names here still resolve
    (bundle configs may name them), without importing MONAI until one is asked for."""
    if name in ("CropToLungBox", "CropToLungBoxd", "PasteFromLungBox", "PasteFromLungBoxd"):
        from covseg.transforms import crop_transforms

        return getattr(crop_transforms, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
