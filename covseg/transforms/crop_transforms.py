"""MONAI array and dict transforms of :mod:`covseg.transforms.crop` (the lung box crop and its inverse; kept apart
from the functions, which import no MONAI)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from covseg.transforms.crop import DEFAULT_MARGIN_PX, Box, crop_to_box, lung_box, paste_from_box
from covseg.transforms.grey_lung import grey_lung_box

__all__ = [
    "CropToLungBox", "PasteFromLungBox", "CropToGreyLungBox",
    "CropToLungBoxd", "PasteFromLungBoxd", "CropToGreyLungBoxd",
]


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


class CropToGreyLungBox(Transform):
    """Array transform: crop a grey slice (``[c, y, x]`` or ``[y, x]``) to the lung box found on its first
    channel by :func:`covseg.transforms.grey_lung.grey_lung_box` (unchanged when no lungs are found)."""

    def __init__(self, margin_frac: float = 0.02) -> None:
        self.margin_frac = float(margin_frac)

    def __call__(self, img: Any) -> Any:
        plane = img[0] if img.ndim == 3 else img
        box = grey_lung_box(plane, self.margin_frac)
        return img if box is None else crop_to_box(img, box)


class CropToGreyLungBoxd(MapTransform):
    """Dict twin of :class:`CropToGreyLungBox`: each of ``keys`` cropped to the lung box of its own slice."""

    def __init__(self, keys: KeysCollection, margin_frac: float = 0.02, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.cropper = CropToGreyLungBox(margin_frac)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.cropper(d[key])
        return d


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
