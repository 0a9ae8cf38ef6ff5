"""Dict transforms for the slice classifier: grey slice files -> (1, S, S) tensors in [0, 1], label untouched.

Training augmentation follows the JCS recipe (flips, random crop via a mild affine) plus what covseg's slices
need: 90° turns (COVID-SemiSeg and volume slices come in other orientations than the classification sets) and
display-window jitter (:func:`covseg.transforms.augment.window_jitter`). Image mixing is done per batch by the
trainer (:mod:`covseg.engines.training.classifier`).
"""

from __future__ import annotations

from monai.transforms import (
    Compose,
    EnsureTyped,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    Resized,
    ThresholdIntensityd,
)

from covseg.options import as_flag
from covseg.transforms.augment import window_jitter
from covseg.transforms.crop_transforms import CropToGreyLungBoxd
from covseg.transforms.intensity_transforms import Rewindowd
from covseg.transforms.load import LoadGreySliced


def _lung_crop(lung_crop: bool | str) -> list:
    return [CropToGreyLungBoxd(keys="image")] if as_flag(lung_crop, "lung_crop") else []


def classifier_eval_transforms(image_size: int = 224, lung_crop: bool = False) -> Compose:
    """Read the slice (path or (1, H, W) array), show it in the COVID-SemiSeg window when the item names the
    window it was written with (``window``: (level, width);
    :class:`covseg.transforms.intensity_transforms.Rewindowd`, as
    ``covseg diagnose`` windows a CT volume), with ``lung_crop`` crop it to the lung box found on the grey slice
    (:func:`covseg.transforms.grey_lung.grey_lung_box`, the framing of ``covseg diagnose``'s lung crops), and
    resize it to ``image_size``²."""
    return Compose([
        LoadGreySliced(keys="image", binary_keys=()),
        Rewindowd(keys="image"),
        *_lung_crop(lung_crop),
        Resized(keys="image", spatial_size=(image_size, image_size), mode="bilinear"),
        EnsureTyped(keys="image", track_meta=False),
    ])


def classifier_train_transforms(image_size: int = 224, lung_crop: bool = False) -> Compose:
    """:func:`classifier_eval_transforms` followed by orientation, geometry and window augmentation."""
    return Compose([
        LoadGreySliced(keys="image", binary_keys=()),
        *_lung_crop(lung_crop),
        Resized(keys="image", spatial_size=(image_size, image_size), mode="bilinear"),
        RandFlipd(keys="image", prob=0.5, spatial_axis=0),
        RandFlipd(keys="image", prob=0.5, spatial_axis=1),
        RandRotate90d(keys="image", prob=0.5, max_k=3),
        RandAffined(keys="image", prob=0.7, rotate_range=0.2, scale_range=(0.25, 0.25), translate_range=0.08 *
                    image_size, mode="bilinear", padding_mode="zeros"),
        RandAdjustContrastd(keys="image", prob=0.3, gamma=(0.7, 1.5)),
        *window_jitter(prob=0.5),
        RandGaussianNoised(keys="image", prob=0.2, std=0.02),
        ThresholdIntensityd(keys="image", threshold=0.0, above=True, cval=0.0),
        ThresholdIntensityd(keys="image", threshold=1.0, above=False, cval=1.0),
        EnsureTyped(keys="image", track_meta=False),
    ])
