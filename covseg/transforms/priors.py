"""Dict transforms for the multi-class heads: pick an infection prior, augment slice + prior + class label together,
and stack slice and prior as the head's two input channels."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.transforms import (
    Compose,
    ConcatItemsd,
    DeleteItemsd,
    EnsureTyped,
    MapTransform,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandomizableTransform,
    RandRotate90d,
    Resized,
    ThresholdIntensityd,
)

from covseg.transforms.augment import window_jitter

KEYS = ("image", "prior", "label")


class PickPriord(RandomizableTransform, MapTransform):
    """``d["prior"]`` of shape (draws, H, W) becomes one draw (1, H, W) float32: a random one when ``random``
    (training on several perturbed priors), else the first; with probability ``clean_prob`` the draw is replaced
    by ``d["clean_prior"]`` when the item has one."""

    def __init__(self, key: str = "prior", random: bool = True, clean_prob: float = 0.0) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        MapTransform.__init__(self, key)
        self.key, self.random, self.clean_prob = key, random, clean_prob

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        draws = np.asarray(d[self.key])
        if draws.ndim == 2:
            draws = draws[None]
        k = int(self.R.randint(draws.shape[0])) if self.random else 0
        prior = draws[k]
        if self.random and "clean_prior" in d and self.R.rand() < self.clean_prob:
            prior = np.asarray(d["clean_prior"])[0]
        d[self.key] = prior.astype(np.float32)[None]
        d.pop("clean_prior", None)
        return d


def _to_input() -> list:
    """Slice and prior -> the 2-channel ``image``; the prior key is removed."""
    return [ConcatItemsd(keys=("image", "prior"), name="image", dim=0), DeleteItemsd(keys="prior")]


def multiclass_train_transforms(image_size: int = 352, clean_prob: float = 0.0) -> Compose:
    """Training augmentation of Inf-Net's recipe, applied to slice, prior (bilinear) and class label (nearest);
    intensity changes touch the slice only."""
    return Compose([
        PickPriord(random=True, clean_prob=clean_prob),
        Resized(keys=KEYS, spatial_size=(image_size, image_size), mode=("bilinear", "bilinear", "nearest")),
        RandFlipd(keys=KEYS, prob=0.5, spatial_axis=0),
        RandFlipd(keys=KEYS, prob=0.5, spatial_axis=1),
        RandRotate90d(keys=KEYS, prob=0.75, max_k=3),
        RandAffined(keys=KEYS, prob=0.5, rotate_range=0.26, scale_range=0.15, translate_range=20,
                    mode=("bilinear", "bilinear", "nearest"), padding_mode="zeros"),
        RandAdjustContrastd(keys="image", prob=0.3, gamma=(0.7, 1.5)),
        *window_jitter(prob=0.5),
        RandGaussianNoised(keys="image", prob=0.2, std=0.02),
        ThresholdIntensityd(keys=("image", "prior"), threshold=0.0, above=True, cval=0.0),
        ThresholdIntensityd(keys=("image", "prior"), threshold=1.0, above=False, cval=1.0),
        *_to_input(),
        EnsureTyped(keys=("image", "label"), track_meta=False),
    ])


def multiclass_eval_transforms(image_size: int = 352) -> Compose:
    """Resize slice and (first) prior; the label stays at its own size for scoring."""
    return Compose([
        PickPriord(random=False),
        Resized(keys=("image", "prior"), spatial_size=(image_size, image_size), mode="bilinear"),
        *_to_input(),
        EnsureTyped(keys=("image", "label"), track_meta=False),
    ])
