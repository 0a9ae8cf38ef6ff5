"""Binary edge map of a segmentation mask, as COVID-SemiSeg's ``train/labeled/edges`` were derived.

The dataset's edges are the morphological gradient of the ground truth with the 4-connected cross:
``dilate(mask) & ~erode(mask)`` (pixels outside the image count as foreground for the erosion, so a
mask touching the border has no edge along it). With ``thickness=1`` this reproduces the 50 edge PNGs
with mean Dice 0.9989 (min 0.996, no missed edge pixel; see ``docs/windowing.md``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from scipy import ndimage as ndi

__all__ = ["edge_map", "EdgeMap", "EdgeMapd"]

_CROSS = ndi.generate_binary_structure(2, 1)


def edge_map(mask: Any, thickness: int = 1, threshold: float = 0.5) -> np.ndarray:
    """Edge of ``mask > threshold``: ``thickness`` pixels either side of the boundary (band 2*thickness wide).

    ``mask`` is ``[y, x]`` or channel-first ``[c, y, x]`` (any leading axes; each 2D plane separately),
    numpy or torch; 0/255 masks work with the default threshold. Returns float32 0/1 of the same shape.
    """
    if thickness < 1:
        raise ValueError(f"thickness must be >= 1, got {thickness}")
    arr = np.asarray(mask.detach().cpu().numpy() if hasattr(mask, "detach") else mask)
    if arr.ndim < 2:
        raise ValueError(f"edge_map expects a [.., y, x] mask, got shape {arr.shape}")
    m = arr > threshold
    st = np.zeros((1,) * (m.ndim - 2) + _CROSS.shape, bool)
    st[(0,) * (m.ndim - 2)] = _CROSS
    dil = ndi.binary_dilation(m, st, iterations=thickness)
    ero = ndi.binary_erosion(m, st, iterations=thickness, border_value=1)
    return (dil & ~ero).astype(np.float32)


class EdgeMap(Transform):
    """Array transform: :func:`edge_map` of a mask (float32 0/1, same shape)."""

    def __init__(self, thickness: int = 1, threshold: float = 0.5) -> None:
        if thickness < 1:
            raise ValueError(f"thickness must be >= 1, got {thickness}")
        self.thickness = int(thickness)
        self.threshold = float(threshold)

    def __call__(self, mask: Any) -> np.ndarray:
        return edge_map(mask, self.thickness, self.threshold)


class EdgeMapd(MapTransform):
    """Dict transform: writes :func:`edge_map` of ``d[key]`` to ``d[edge_key]`` (default ``"edge"``).

    With several keys (or ``edge_key=None``), the edges of each go to ``f"{key}_edge"``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        edge_key: str | None = "edge",
        thickness: int = 1,
        threshold: float = 0.5,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.edge_key = edge_key
        self.op = EdgeMap(thickness, threshold)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        for key in keys:
            out = self.edge_key if (self.edge_key is not None and len(keys) == 1) else f"{key}_edge"
            d[out] = self.op(d[key])
        return d
