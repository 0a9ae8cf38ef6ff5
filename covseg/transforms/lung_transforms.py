"""MONAI array and dict transforms of :func:`covseg.transforms.lung.lung_mask` (kept apart from the algorithm, which
imports no MONAI)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from covseg.transforms.lung import lung_mask

__all__ = ["LungMask", "LungMaskd"]


class LungMask(Transform):
    """Array transform: HU volume ``[z, y, x]`` (or ``[1, z, y, x]``) -> uint8 lung labels (1 right, 2 left)."""

    def __init__(self, spacing_xyz: Sequence[float] = (1.0, 1.0, 1.0), **kwargs: Any) -> None:
        self.spacing_xyz = tuple(float(s) for s in spacing_xyz)
        self.kwargs = kwargs

    def __call__(self, img: Any, spacing_xyz: Sequence[float] | None = None) -> np.ndarray:
        arr = np.asarray(img.detach().cpu().numpy() if hasattr(img, "detach") else img)
        channel = arr.ndim == 4
        if channel:
            if arr.shape[0] != 1:
                raise ValueError(f"LungMask expects one channel, got shape {arr.shape}")
            arr = arr[0]
        out = lung_mask(arr, spacing_xyz if spacing_xyz is not None else self.spacing_xyz, **self.kwargs)
        return out[None] if channel else out


class LungMaskd(MapTransform):
    """Dict transform: writes ``lung_mask(d[key])`` to ``d[mask_key]``.

    The spacing comes from ``d[spacing_key]`` (x, y, z mm) when present, else from ``spacing_xyz``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str = "lung",
        spacing_key: str | None = "spacing",
        spacing_xyz: Sequence[float] = (1.0, 1.0, 1.0),
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.spacing_key = spacing_key
        self.op = LungMask(spacing_xyz, **kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            spacing = d.get(self.spacing_key) if self.spacing_key is not None else None
            d[self.mask_key] = self.op(d[key], None if spacing is None else tuple(np.asarray(spacing, float)))
        return d
