"""HU windowing to the 8-bit lung-window look of the COVID-SemiSeg training slices.

``window_hu(hu, level, width)`` maps HU linearly to [0, 1] (``grey / 255`` of an 8-bit slice):
``level - width / 2`` -> 0, ``level + width / 2`` -> 1, clipped. ``SEMISEG_WINDOW`` is the window
estimated from the labelled / test slices of COVID-SemiSeg (undocumented by the dataset): grey levels
of air, subcutaneous/mediastinal fat and soft tissue measured in the slices, fitted against their HU.
The evidence (per-group tables, fit, residuals, a recovery check on real CT) is in ``docs/windowing.md``.

``grey_landmarks`` and ``fit_window`` are the estimator, kept here so the estimate can be reproduced
(and redone for another 8-bit source).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from scipy import ndimage as ndi
from scipy.ndimage import gaussian_filter1d
from scipy.signal import find_peaks

__all__ = [
    "SEMISEG_WINDOW",
    "SEMISEG_CORONACASES_WINDOW",
    "SEMISEG_RADIOPAEDIA_WINDOW",
    "TISSUE_HU",
    "window_hu",
    "rewindow",
    "semiseg_window_of",
    "WindowHU",
    "WindowHUd",
    "Rewindowd",
    "grey_landmarks",
    "fit_window",
    "fit_landmarks",
]

SEMISEG_WINDOW: tuple[float, float] = (-430.0, 1350.0)
"""(level, width) in HU of the COVID-SemiSeg labelled / test slices: HU -1105 -> 0, +245 -> 255."""

SEMISEG_CORONACASES_WINDOW: tuple[float, float] = (330.0, 2770.0)
"""(level, width) of the unlabelled slices cut from the 10 coronacases volumes (a much wider window,
apparently each volume's own min-max: width 2660-3360 between volumes)."""

SEMISEG_RADIOPAEDIA_WINDOW: tuple[float, float] = (-470.0, 1390.0)
"""(level, width) of the unlabelled slices from the 9 radiopaedia volumes (level -390..-630 between cases)."""

TISSUE_HU: dict[str, float] = {"air": -1000.0, "fat": -100.0, "soft": 40.0}
"""Reference HU of the landmarks used to fit a window: air, fat, soft tissue (muscle / blood)."""


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


# ---------------------------------------------------------------------------------------------------
# estimator: grey levels of known tissues in an 8-bit slice, and the window they imply


def _otsu(hist: np.ndarray) -> int:
    """Otsu threshold of a 256-bin histogram."""
    p = hist / max(hist.sum(), 1.0)
    omega = np.cumsum(p)
    mu = np.cumsum(p * np.arange(p.size))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * omega - mu) ** 2 / (omega * (1.0 - omega))
    return int(np.nanargmax(between))


def grey_landmarks(img: np.ndarray) -> dict[str, float | None]:
    """Grey levels (0-255) of tissue landmarks in one 8-bit, lung-cropped CT slice.

    - ``lung``: mode of the dark class (below the Otsu threshold): lung parenchyma;
    - ``soft`` / ``fat``: the dominant histogram peak of the bright class (below 244, above is saturated
      bone or contrast) and a second peak 8-50 grey levels from it with at least 10 % of its height:
      the upper one is soft tissue (heart, muscle), the lower one fat; with one peak only, it is taken
      as soft tissue (true of lung-box crops, where the mediastinum dominates, not of wide crops);
    - ``air``: median grey of the darkest airway lumen (a dark component not touching the slice border,
      40-4000 px, whose surrounding ring is soft tissue), if any: trachea, main bronchi.

    Saturated pixels (>= 250) are ignored for the peaks. Missing landmarks are None.
    """
    a = np.asarray(img)
    if a.ndim == 3:
        a = a[..., 0]
    a = np.clip(a, 0, 255).astype(np.uint8)
    hist = np.bincount(a.ravel(), minlength=256).astype(np.float64)
    hist[250:] = 0.0
    smooth = gaussian_filter1d(hist, 2.0)
    smooth /= max(smooth.sum(), 1e-9)
    t = _otsu(np.bincount(a.ravel(), minlength=256).astype(np.float64))
    lung_peak = float(np.argmax(smooth[: max(t, 1)]))
    out: dict[str, float | None] = {"lung": lung_peak, "fat": None, "soft": None, "air": None}
    peaks, _ = find_peaks(smooth, prominence=0.0005, distance=6)
    bright = [int(p) for p in peaks if t < p < 244]  # peaks at 244+ are saturated bone / contrast
    if not bright:
        return out
    top = max(bright, key=lambda p: smooth[p])
    second = [p for p in bright if 8 < abs(p - top) < 50 and smooth[p] > 0.1 * smooth[top]]
    if second:
        other = max(second, key=lambda p: smooth[p])
        out["fat"], out["soft"] = float(min(top, other)), float(max(top, other))
    else:
        out["soft"] = float(top)
    soft = out["soft"]
    assert soft is not None

    lung = out["lung"] or 0.0
    lab, n = ndi.label(a < (lung + t) / 2.0)
    airs = []
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None:
            continue
        comp = lab[sl] == i
        area = int(comp.sum())
        if not 40 <= area <= 4000:
            continue
        if sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == a.shape[0] or sl[1].stop == a.shape[1]:
            continue
        ys = slice(max(sl[0].start - 4, 0), sl[0].stop + 4)
        xs = slice(max(sl[1].start - 4, 0), sl[1].stop + 4)
        c = lab[ys, xs] == i
        ring = ndi.binary_dilation(c, iterations=3) & ~ndi.binary_dilation(c, iterations=1)
        if np.percentile(a[ys, xs][ring], 20) < t + 0.5 * (soft - t):
            continue
        inner = ndi.binary_erosion(c, iterations=2)
        if inner.sum() < 10:
            continue
        airs.append(float(np.median(a[ys, xs][inner])))
    if airs:
        out["air"] = min(airs)
    return out


def fit_window(hu: Sequence[float], grey: Sequence[float]) -> tuple[float, float]:
    """Least-squares (level, width) of ``grey = 255 * (hu - level + width / 2) / width`` (grey in 0-255)."""
    x = np.asarray(hu, dtype=np.float64)
    y = np.asarray(grey, dtype=np.float64)
    if x.size < 2 or np.ptp(x) == 0:
        raise ValueError("need landmarks at two different HU at least")
    slope, intercept = np.polyfit(x, y, 1)
    if slope <= 0:
        raise ValueError("grey levels do not increase with HU")
    width = 255.0 / slope
    lo = -intercept / slope
    return float(lo + width / 2.0), float(width)


def fit_landmarks(landmarks: Iterable[Mapping[str, float | None]]) -> tuple[float, float] | None:
    """Window from the medians of several slices' landmarks (``air``, ``fat``, ``soft`` vs ``TISSUE_HU``)."""
    rows = list(landmarks)
    hu, grey = [], []
    for name, ref in TISSUE_HU.items():
        vals = [r[name] for r in rows if r.get(name) is not None]
        if vals:
            hu.append(ref)
            grey.append(float(np.median(vals)))
    return fit_window(hu, grey) if len(hu) >= 2 else None
