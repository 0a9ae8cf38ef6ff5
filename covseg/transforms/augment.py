"""Training augmentation for 2D slices: orientation invariance (flips, 90° turns), mild affine, intensity jitter.

COVID-SemiSeg slices come in several orientations and windows (see the dataset README), and slices cut from a CT
volume come in yet another, so the recipe trains orientation- and window-invariant.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    EnsureTyped,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Resized,
    ThresholdIntensityd,
)

from covseg.options import as_flag
from covseg.transforms.intensity_transforms import Rewindowd
from covseg.transforms.load import LoadGreySliced

KEYS = ("image", "label")


def window_jitter(prob: float = 0.8) -> list:
    """A random change of display window: grey' = grey * (1 + f) + o, f in [-0.4, 0.2], o in [-0.1, 0.35].

    Windows (level/width) are linear in HU, so a different window is a linear map of the grey levels. The ranges
    cover the COVID-SemiSeg slices, whose lung air sits anywhere from grey 10 to grey 108 (5th percentile).
    """
    return [
        RandScaleIntensityd(keys="image", prob=prob, factors=(-0.4, 0.2)),
        RandShiftIntensityd(keys="image", prob=prob, offsets=(-0.1, 0.35)),
    ]


def random_moves(keys: KeysCollection, modes: str | Sequence[str]) -> list:
    """Orientation and position changes applied alike to ``keys`` (resampled with ``modes``): flips, 90° turns
    and a mild affine (±15°, ±15 % scale, ±20 px)."""
    return [
        RandFlipd(keys=keys, prob=0.5, spatial_axis=0),
        RandFlipd(keys=keys, prob=0.5, spatial_axis=1),
        RandRotate90d(keys=keys, prob=0.75, max_k=3),
        RandAffined(keys=keys, prob=0.5, rotate_range=0.26, scale_range=0.15, translate_range=20,
                    mode=modes, padding_mode="zeros"),
    ]


def train_transforms(image_size: int = 352, strong_window_jitter: bool = True, soft_labels: bool = False) -> Compose:
    """Read file paths (pseudo-labelled items), resize to ``image_size``², augment; labels stay binary.

    An item with a ``window`` (level, width) is first re-windowed to the SemiSeg window
    (:class:`covseg.transforms.intensity_transforms.Rewindowd`; unlabelled slices from
    ``unlabelled_items(rewindowed=True)``).
    Labels are resampled nearest, so binary masks stay binary. ``soft_labels``: label files are read as
    probabilities (soft pseudo labels, not thresholded); labels given as arrays pass through as they are.

    ``strong_window_jitter``: the wide display-window change of :func:`window_jitter`; ``False`` gives the
    mild jitter (scale ±0.15, shift ±0.08, each with probability 0.3) of the first shipped weights.
    """
    intensity = window_jitter() if as_flag(strong_window_jitter, "strong_window_jitter") else [
        RandScaleIntensityd(keys="image", prob=0.3, factors=0.15),
        RandShiftIntensityd(keys="image", prob=0.3, offsets=0.08),
    ]
    soft = as_flag(soft_labels, "soft_labels")
    modes = ("bilinear", "nearest")
    return Compose([
        LoadGreySliced(keys=KEYS, binary_keys=() if soft else ("label",)),
        Rewindowd(keys="image"),  # an item that names its own window is shown in the SemiSeg window
        Resized(keys=KEYS, spatial_size=(image_size, image_size), mode=modes),
        *random_moves(KEYS, modes),
        RandAdjustContrastd(keys="image", prob=0.3, gamma=(0.7, 1.5)),
        *intensity,
        RandGaussianNoised(keys="image", prob=0.2, std=0.02),
        ThresholdIntensityd(keys="image", threshold=0.0, above=True, cval=0.0),
        ThresholdIntensityd(keys="image", threshold=1.0, above=False, cval=1.0),
        EnsureTyped(keys=KEYS, track_meta=False),
    ])


def eval_transforms(image_size: int = 352) -> Compose:
    """Resize the image only (labels are scored at their own size)."""
    return Compose([
        Resized(keys="image", spatial_size=(image_size, image_size), mode="bilinear"),
        EnsureTyped(keys=KEYS, track_meta=False),
    ])
