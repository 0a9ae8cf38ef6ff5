"""Writing a predicted slice map inside a transform chain (the twin of :class:`covseg.transforms.load.LoadGreySliced`).

Used as the postprocessing of 2D slice-folder inference workflows: each prediction is resized back to its slice's
own size (logits, bilinear, as :class:`covseg.engines.inference.predictor.SlicePredictor` does), turned into a
probability and written atomically as an 8-bit PNG named like the input slice.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform

from covseg.io.slices import write_grey

__all__ = ["SaveGreyMapd"]


class SaveGreyMapd(MapTransform):
    """Dict transform: the (1, h, w) logits under each key → ``output_dir/<name>.png`` at size ``data[size_key]``.

    ``name_key`` holds the output stem, ``size_key`` the slice's (H, W); ``sigmoid`` turns logits into probabilities
    after the resize (``False``: the map is already in [0, 1]). The written path is stored under ``<key>_path``.
    """

    def __init__(self, keys: KeysCollection, output_dir: str | Path, name_key: str = "name", size_key: str = "size",
                 sigmoid: bool = True, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        self.name_key, self.size_key, self.sigmoid = name_key, size_key, sigmoid

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            logits = torch.as_tensor(d[key]).detach().float().cpu()
            if logits.ndim != 3 or logits.shape[0] != 1:
                raise ValueError(f"{d.get(self.name_key)}: expected a (1, h, w) map under {key!r}, got "
                                 f"{tuple(logits.shape)}")
            size = tuple(int(s) for s in d[self.size_key])
            if tuple(logits.shape[-2:]) != size:
                logits = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
            prob = torch.sigmoid(logits) if self.sigmoid else logits
            self.output_dir.mkdir(parents=True, exist_ok=True)
            d[f"{key}_path"] = str(write_grey(self.output_dir / f"{d[self.name_key]}.png", prob[0].numpy()))
        return d
