"""Estimate the HU window an 8-bit CT slice was written with: grey levels of known tissues (air, fat, soft
tissue) measured in the slice, fitted against their HU. This is how ``intensity.SEMISEG_WINDOW`` was found (the
evidence is in ``docs/windowing.md``); kept so the estimate can be reproduced, and redone for another 8-bit source.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi
from scipy.ndimage import gaussian_filter1d
from scipy.signal import find_peaks

__all__ = ["TISSUE_HU", "grey_landmarks", "fit_window", "fit_landmarks"]

TISSUE_HU: dict[str, float] = {"air": -1000.0, "fat": -100.0, "soft": 40.0}
"""Reference HU of the landmarks used to fit a window: air, fat, soft tissue (muscle / blood)."""


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
