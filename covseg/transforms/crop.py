"""Strip non-lung regions of an axial slice: crop to the lung bounding box, and paste back exactly.

COVID-SemiSeg training slices are lung bounding boxes, not the whole thorax: the lungs touch the image
edge on most sides of the labelled / test slices (median margin 0 px, 90th percentile 7 px) and sit
7-12 px in from it on the unlabelled ones. ``DEFAULT_MARGIN_PX = 5`` (3.5 mm at 0.7 mm pixels;
``margin_px(spacing)`` converts for other pixel sizes) mimics that look while keeping a little room
for subpleural lesions (see ``docs/windowing.md``).

A ``Box`` is ``(y0, y1, x0, x1)``, half-open, on the last two axes; arrays may be 2D ``[y, x]`` or
channel-first ``[c, y, x]`` (any leading axes), numpy or torch.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

__all__ = [
    "Box",
    "DEFAULT_MARGIN_PX",
    "DEFAULT_MARGIN_MM",
    "margin_px",
    "lung_box",
    "crop_to_box",
    "paste_from_box",
    "CropToLungBox",
    "PasteFromLungBox",
    "CropToLungBoxd",
    "PasteFromLungBoxd",
]

Box = tuple[int, int, int, int]
DEFAULT_MARGIN_PX = 5
DEFAULT_MARGIN_MM = 3.5
"""``DEFAULT_MARGIN_PX`` in mm at the 0.7 mm pixels of a typical 512 x 512 chest slice."""


def margin_px(spacing_xyz: Sequence[float], margin_mm: float = DEFAULT_MARGIN_MM) -> int:
    """A margin of ``margin_mm`` in pixels of a slice with in-plane spacing ``spacing_xyz[:2]`` (mm)."""
    return max(int(round(margin_mm / max(min(float(spacing_xyz[0]), float(spacing_xyz[1])), 1e-6))), 0)


def _as_numpy(x: Any) -> np.ndarray:
    return np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)


def lung_box(mask_slice: Any, margin_px: int = DEFAULT_MARGIN_PX) -> Box | None:
    """Bounding box ``(y0, y1, x0, x1)`` of ``mask_slice > 0`` grown by ``margin_px``, clipped to the slice.

    ``mask_slice`` is ``[y, x]`` or ``[c, y, x]`` (channels are merged). None when the slice has no lung.
    """
    m = _as_numpy(mask_slice) > 0
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


class CropToLungBox(Transform):
    """Array transform: crop ``img`` to the lung box of ``mask`` (unchanged when the mask is empty)."""

    def __init__(self, margin_px: int = DEFAULT_MARGIN_PX) -> None:
        self.margin_px = int(margin_px)

    def compute_box(self, mask: Any) -> Box | None:
        """The lung box of ``mask`` with this transform's margin."""
        return lung_box(mask, self.margin_px)

    def __call__(self, img: Any, mask: Any) -> Any:
        box = self.compute_box(mask)
        return img if box is None else crop_to_box(img, box)


class PasteFromLungBox(Transform):
    """Array transform: paste ``patch`` back into a ``shape``-sized slice at ``box`` (all ``fill`` if no box)."""

    def __init__(self, fill: float = 0) -> None:
        self.fill = fill

    def __call__(self, patch: Any, box: Box | None, shape: Sequence[int]) -> Any:
        if box is None:
            full = (*patch.shape[:-2], int(shape[-2]), int(shape[-1]))
            if hasattr(patch, "new_full"):
                return patch.new_full(full, self.fill)
            return np.full(full, self.fill, dtype=np.asarray(patch).dtype)
        return paste_from_box(patch, box, shape, self.fill)


def _meta_key(key: Hashable) -> str:
    return f"{key}_meta_dict"


class CropToLungBoxd(MapTransform):
    """Dict transform: crop ``keys`` to the lung box of ``d[mask_key]``; the box goes into the dict.

    Stores ``d[box_key] = {"box": (y0, y1, x0, x1) or None, "spatial_shape": (h, w)}`` and, MONAI-style,
    the same under ``"lung_box"`` / ``"lung_box_spatial_shape"`` in each key's ``<key>_meta_dict`` (and in
    ``.meta`` of MetaTensors). With no lung in the slice nothing is cropped and the box is None.
    ``mask_key`` is cropped too when listed in ``keys``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str = "lung",
        margin_px: int = DEFAULT_MARGIN_PX,
        box_key: str = "lung_box",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.box_key = box_key
        self.op = CropToLungBox(margin_px)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        mask = d[self.mask_key]
        box = self.op.compute_box(mask)
        shape = (int(mask.shape[-2]), int(mask.shape[-1]))
        d[self.box_key] = {"box": box, "spatial_shape": shape}
        for key in self.key_iterator(d):
            if tuple(d[key].shape[-2:]) != shape:
                raise ValueError(f"{key}: spatial shape {tuple(d[key].shape[-2:])} differs from the mask's {shape}")
            if box is not None:
                d[key] = crop_to_box(d[key], box)
            meta = dict(d.get(_meta_key(key)) or {})
            meta.update({"lung_box": box, "lung_box_spatial_shape": shape})
            d[_meta_key(key)] = meta
            if hasattr(d[key], "meta") and isinstance(d[key].meta, dict):
                d[key].meta["lung_box"] = box
                d[key].meta["lung_box_spatial_shape"] = shape
        return d


class PasteFromLungBoxd(MapTransform):
    """Dict transform: paste ``keys`` back to the slice size recorded by :class:`CropToLungBoxd`.

    Reads ``d[box_key]`` (falls back to ``<key>_meta_dict``). A slice that had no lung (box None) becomes
    all ``fill``: no lung, nothing to segment.
    """

    def __init__(
        self, keys: KeysCollection, box_key: str = "lung_box", fill: float = 0, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.box_key = box_key
        self.op = PasteFromLungBox(fill)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            info = d.get(self.box_key)
            if info is not None:
                box, shape = info["box"], info["spatial_shape"]
            else:
                meta = d.get(_meta_key(key)) or {}
                if "lung_box_spatial_shape" not in meta:
                    raise KeyError(f"{key}: no lung box recorded (run CropToLungBoxd first)")
                box, shape = meta["lung_box"], meta["lung_box_spatial_shape"]
            d[key] = self.op(d[key], box, shape)
        return d
