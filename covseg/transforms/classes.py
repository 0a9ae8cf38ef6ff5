"""Class probability maps from C-class logits inside a transform chain (postprocessing of slice inference)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.transforms import MapTransform

__all__ = ["ClassMapsd"]


class ClassMapsd(MapTransform):
    """Dict transform: (C, h, w) logits under ``key`` -> softmax at size ``data[size_key]`` (bilinear on the logits,
    then softmax, as :class:`covseg.engines.inference.predictor.SlicePredictor` does); class c's (1, H, W) probability
    is stored under ``names[c]`` (an empty name skips the class)."""

    def __init__(self, key: str, names: Sequence[str], size_key: str = "size") -> None:
        super().__init__(key)
        self.key, self.names, self.size_key = key, list(names), size_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        logits = torch.as_tensor(d[self.key]).detach().float().cpu()
        if logits.ndim != 3 or logits.shape[0] != len(self.names):
            raise ValueError(f"expected ({len(self.names)}, h, w) logits under {self.key!r}, got {tuple(logits.shape)}")
        size = tuple(int(s) for s in d[self.size_key])
        if tuple(logits.shape[-2:]) != size:
            logits = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
        probs = torch.softmax(logits, dim=0)
        for c, name in enumerate(self.names):
            if name:
                d[name] = probs[c:c + 1]
        return d
