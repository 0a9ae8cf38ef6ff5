"""HU windowing to the 8-bit lung-window look of the COVID-SemiSeg training slices.

``window_hu(hu, level, width)`` maps HU linearly to [0, 1] (``grey / 255`` of an 8-bit slice):
``level - width / 2`` -> 0, ``level + width / 2`` -> 1, clipped. ``SEMISEG_WINDOW`` is the window
estimated from the labelled / test slices of COVID-SemiSeg (undocumented by the dataset): grey levels
of air, subcutaneous/mediastinal fat and soft tissue measured in the slices, fitted against their HU.
The evidence (per-group tables, fit, residuals, a recovery check on real CT) is in ``docs/windowing.md``.

The estimator (``grey_landmarks``, ``fit_window``) is ``window_fit``; the MONAI transforms are
``intensity_transforms``. This module imports no MONAI: ``covseg infer`` imports it before its first slice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SEMISEG_WINDOW",
    "SEMISEG_CORONACASES_WINDOW",
    "SEMISEG_RADIOPAEDIA_WINDOW",
    "window_hu",
    "rewindow",
    "semiseg_window_of",
]

SEMISEG_WINDOW: tuple[float, float] = (-430.0, 1350.0)
"""(level, width) in HU of the COVID-SemiSeg labelled / test slices: HU -1105 -> 0, +245 -> 255."""

SEMISEG_CORONACASES_WINDOW: tuple[float, float] = (330.0, 2770.0)
"""(level, width) of the unlabelled slices cut from the 10 coronacases volumes (a much wider window,
apparently each volume's own min-max: width 2660-3360 between volumes)."""

SEMISEG_RADIOPAEDIA_WINDOW: tuple[float, float] = (-470.0, 1390.0)
"""(level, width) of the unlabelled slices from the 9 radiopaedia volumes (level -390..-630 between cases)."""


def window_hu(hu: Any, level: float = SEMISEG_WINDOW[0], width: float = SEMISEG_WINDOW[1]) -> np.ndarray:
    """Linear HU -> [0, 1] map of the window ``(level, width)``, clipped; float32, same shape.

    Equivalent to ``grey / 255`` of an 8-bit slice written with that window (before rounding).
    Torch tensors are accepted (converted to numpy).
    """
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    arr = np.asarray(hu.detach().cpu().numpy() if hasattr(hu, "detach") else hu, dtype=np.float32)
    lo = np.float32(level - width / 2.0)
    out = np.asarray((arr - lo) * np.float32(1.0 / width), dtype=np.float32)
    return np.clip(out, 0.0, 1.0, out=out)


def rewindow(grey: Any, source: tuple[float, float], target: tuple[float, float] = SEMISEG_WINDOW) -> np.ndarray:
    """An image in [0, 1] written with the window ``source`` (level, width), shown with the window ``target``
    instead: grey -> HU -> :func:`window_hu`. HU clipped by the source window stay clipped."""
    level, width = source
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    arr = np.asarray(grey, dtype=np.float32)
    return window_hu(arr * np.float32(width) + np.float32(level - width / 2.0), *target)


def semiseg_window_of(name: str) -> tuple[float, float]:
    """The window of a COVID-SemiSeg slice by its file name: the unlabelled ``Data-1_coronacases_*`` and
    ``Data-1_radiopaedia_*`` slices have their own (``docs/windowing.md``), every other slice ``SEMISEG_WINDOW``."""
    stem = Path(name).name
    if stem.startswith("Data-1_coronacases"):
        return SEMISEG_CORONACASES_WINDOW
    if stem.startswith("Data-1_radiopaedia"):
        return SEMISEG_RADIOPAEDIA_WINDOW
    return SEMISEG_WINDOW


def __getattr__(name: str) -> Any:
    """The MONAI transforms live in :mod:`covseg.transforms.intensity_transforms`; their old names here still
    resolve (bundle configs name ``covseg.transforms.intensity.Rewindowd``), without importing MONAI until asked."""
    if name in ("Rewindowd", "WindowHU", "WindowHUd"):
        from covseg.transforms import intensity_transforms

        return getattr(intensity_transforms, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
