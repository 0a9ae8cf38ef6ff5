"""Lazy reading of 2D slice files inside a transform chain (the 1,600 unlabelled slices do not sit in memory).

Items may hold arrays (the labelled slices, read up front) or file paths (unlabelled slices and their pseudo
labels); :class:`LoadGreySliced` turns paths into channel-first float arrays and passes arrays through untouched.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform

from covseg.io.slices import read_grey

__all__ = ["LoadGreySliced"]


class LoadGreySliced(MapTransform):
    """Dict transform: a path under each key becomes a (1, H, W) float32 array in [0, 1].

    Keys listed in ``binary_keys`` (masks, pseudo labels) are thresholded at 0.5 to 0/1.
    """

    def __init__(self, keys: KeysCollection, binary_keys: KeysCollection = ("label",),
                 allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        self.binary_keys = {binary_keys} if isinstance(binary_keys, str) else set(binary_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], (str, Path)):
                grey = read_grey(Path(d[key]))
                d[key] = ((grey > 0.5) if key in self.binary_keys else grey).astype(np.float32)[None]
        return d
