"""Two views of an unlabelled slice for consistency training (mean teacher, FixMatch-style weak/strong views).

The *weak* view (:func:`weak_view_transforms`, a dict transform of the data loader) only moves the slice:
flips, 90° turns and a mild affine, so the teacher's prediction on it is a pixel-aligned target. The *strong* view
(:func:`strong_view`) is drawn from the weak one inside the training step: a display-window change, a contrast
(gamma) change, noise and cut-out boxes, with no further movement, so the student's prediction on it is compared
with the teacher's pixel for pixel.
"""

from __future__ import annotations

from monai.transforms import (
    Compose,
    EnsureTyped,
    RandAdjustContrast,
    RandCoarseDropout,
    RandGaussianNoise,
    RandScaleIntensity,
    RandShiftIntensity,
    Resized,
    ThresholdIntensity,
)

from covseg.transforms.augment import random_moves
from covseg.transforms.intensity_transforms import Rewindowd
from covseg.transforms.load import LoadGreySliced

__all__ = ["strong_view", "weak_view_transforms"]


def weak_view_transforms(image_size: int = 352, key: str = "unlabelled",
                         window_key: str = "unlabelled_window") -> Compose:
    """Read the slice under ``key`` (a path), show it in the SemiSeg window when ``window_key`` names its own,
    resize to ``image_size``² and move it at random (flips, 90° turns, mild affine); grey levels are unchanged."""
    return Compose([
        LoadGreySliced(keys=key, binary_keys=()),
        Rewindowd(keys=key, window_key=window_key),
        Resized(keys=key, spatial_size=(image_size, image_size), mode="bilinear"),
        *random_moves(key, "bilinear"),  # as the labelled slices are moved
        EnsureTyped(keys=key, track_meta=False),
    ])


def strong_view(image_size: int = 352) -> Compose:
    """An array transform of one (1, H, W) slice in [0, 1]: a wide window change (as
    :func:`covseg.transforms.augment.window_jitter`), gamma, Gaussian noise and 1-3 cut-out boxes of
    ``image_size``/16 to ``image_size``/6 pixels filled with 0, clipped back to [0, 1]. Geometry is unchanged."""
    return Compose([
        RandScaleIntensity(prob=0.8, factors=(-0.4, 0.2)),
        RandShiftIntensity(prob=0.8, offsets=(-0.1, 0.35)),
        RandAdjustContrast(prob=0.5, gamma=(0.6, 1.6)),
        RandGaussianNoise(prob=0.5, std=0.04),
        RandCoarseDropout(holes=1, max_holes=3, spatial_size=max(image_size // 16, 1),
                          max_spatial_size=max(image_size // 6, 1), fill_value=0.0, prob=0.5),
        ThresholdIntensity(threshold=0.0, above=True, cval=0.0),
        ThresholdIntensity(threshold=1.0, above=False, cval=1.0),
    ])
