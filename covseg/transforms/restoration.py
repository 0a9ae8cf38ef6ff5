"""Self-supervised image restoration for pre-training on unlabelled slices (Models Genesis, Zhou et al. 2019).

Each slice is read, resized and turned (flips, 90° turns); the clean copy becomes the target (``label``) and the
input (``image``) is distorted: local pixel shuffling, a non-linear intensity curve, and in- or out-painting.
A network that restores the clean slice has to learn lung anatomy and texture, without a single label.
"""

from __future__ import annotations

from monai.transforms import (
    Compose,
    CopyItemsd,
    EnsureTyped,
    OneOf,
    RandAdjustContrastd,
    RandCoarseDropoutd,
    RandCoarseShuffled,
    RandFlipd,
    RandHistogramShiftd,
    RandRotate90d,
    Resized,
    ThresholdIntensityd,
)

from covseg.transforms.load import LoadGreySliced


def restoration_transforms(image_size: int = 256) -> Compose:
    """Items ``{"image": path}`` → ``{"image": distorted slice, "label": clean slice}``, both (1, S, S) in [0, 1]."""
    eighth = max(image_size // 8, 1)
    return Compose([
        LoadGreySliced(keys="image"),
        Resized(keys="image", spatial_size=(image_size, image_size), mode="bilinear"),
        RandFlipd(keys="image", prob=0.5, spatial_axis=0),
        RandFlipd(keys="image", prob=0.5, spatial_axis=1),
        RandRotate90d(keys="image", prob=0.75, max_k=3),
        CopyItemsd(keys="image", names="label"),
        RandCoarseShuffled(keys="image", holes=20, max_holes=60, spatial_size=4, max_spatial_size=eighth // 2,
                           prob=0.5),
        OneOf([RandHistogramShiftd(keys="image", num_control_points=(4, 8), prob=1.0),
               RandAdjustContrastd(keys="image", gamma=(0.5, 2.0), prob=1.0)]),
        OneOf([RandCoarseDropoutd(keys="image", holes=3, max_holes=6, spatial_size=eighth,
                                  max_spatial_size=2 * eighth, fill_value=(0.0, 1.0), prob=1.0),
               RandCoarseDropoutd(keys="image", holes=3, max_holes=5, spatial_size=3 * eighth,
                                  max_spatial_size=5 * eighth, dropout_holes=False, fill_value=(0.0, 1.0),
                                  prob=1.0)], weights=(0.7, 0.3)),
        ThresholdIntensityd(keys="image", threshold=0.0, above=True, cval=0.0),
        ThresholdIntensityd(keys="image", threshold=1.0, above=False, cval=1.0),
        EnsureTyped(keys=("image", "label"), track_meta=False),
    ])
