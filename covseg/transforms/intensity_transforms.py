"""MONAI array and dict transforms of :mod:`covseg.transforms.intensity` (HU windowing and re-windowing; kept apart
from the functions, which import no MONAI)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from covseg.transforms.intensity import SEMISEG_WINDOW, rewindow, window_hu

__all__ = ["WindowHU", "WindowHUd", "Rewindowd"]


class WindowHU(Transform):
    """Array transform: HU -> [0, 1] float32 with the window ``(level, width)`` (default ``SEMISEG_WINDOW``)."""

    def __init__(self, level: float = SEMISEG_WINDOW[0], width: float = SEMISEG_WINDOW[1]) -> None:
        if width <= 0:
            raise ValueError(f"window width must be positive, got {width}")
        self.level = float(level)
        self.width = float(width)

    def __call__(self, img: Any) -> np.ndarray:
        return window_hu(img, self.level, self.width)


class WindowHUd(MapTransform):
    """Dict transform: ``WindowHU`` on each of ``keys``."""

    def __init__(
        self,
        keys: KeysCollection,
        level: float = SEMISEG_WINDOW[0],
        width: float = SEMISEG_WINDOW[1],
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = WindowHU(level, width)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.op(d[key])
        return d


class Rewindowd(MapTransform):
    """Dict transform: :func:`rewindow` each of ``keys`` from the item's own window (``data[window_key]``, a
    (level, width) pair, removed from the item) to ``target``; items without a window pass unchanged."""

    def __init__(self, keys: KeysCollection, window_key: str = "window",
                 target: tuple[float, float] = SEMISEG_WINDOW) -> None:
        super().__init__(keys)
        self.window_key, self.target = window_key, target

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        source = d.pop(self.window_key, None)  # consumed: re-windowed items batch with items that never had one
        if source is None:
            return d
        for key in self.key_iterator(d):
            d[key] = rewindow(d[key], tuple(source), self.target)
        return d
