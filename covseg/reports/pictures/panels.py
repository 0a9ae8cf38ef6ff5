"""Axial, coronal and sagittal panels: uint8 RGB arrays of the lung-window CT with the label contours, resampled
to square display pixels from the spacing (a 5 mm-slice coronal keeps its true height), testable without
matplotlib. Orientation: :mod:`covseg.reports.pictures`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from skimage.transform import resize

from covseg.reports.pictures.contours import draw_contours, label_colours, label_map
from covseg.reports.pictures.window import lung_window

__all__ = ["Box", "axial_panel", "coronal_panel", "sagittal_panel", "to_display"]

Box = tuple[int, int]
"""A panel's largest size in pixels, (height, width)."""


def to_display(grey: np.ndarray, labels: np.ndarray, row_mm: float, col_mm: float, multi: bool,
               max_px: int, box: Box | None = None) -> np.ndarray:
    """Resample a 2D [0, 1] image and its label map to square pixels, at most ``max_px`` a side or, with ``box``,
    fitting in ``box`` (the pixels it will be shown on), and draw the contours at that size."""
    h_mm, w_mm = grey.shape[0] * row_mm, grey.shape[1] * col_mm
    box_h, box_w = box if box is not None else (max_px, max_px)
    pix = max(h_mm / box_h, w_mm / box_w)
    pix = max(pix, min(row_mm, col_mm) / 2.0)  # never upsample more than 2x
    shape = (min(box_h, max(1, int(round(h_mm / pix)))), min(box_w, max(1, int(round(w_mm / pix)))))
    img = resize(grey, shape, order=1, preserve_range=True, anti_aliasing=False)
    lab = resize(labels, shape, order=0, preserve_range=True, anti_aliasing=False).astype(np.uint8)
    rgb = np.repeat((np.clip(img, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
    draw_contours(rgb, lab, label_colours(multi), thick=max(shape) >= 320)
    return rgb


def axial_panel(hu: np.ndarray, infection: np.ndarray, spacing: Sequence[float], z: int,
                classes: np.ndarray | None = None, max_px: int = 384, box: Box | None = None) -> np.ndarray:
    """RGB of axial slice ``z``: anterior up, patient right on the left (``max_px``, ``box``: :func:`to_display`)."""
    sx, sy, _ = (float(s) for s in spacing)
    lab = label_map(infection[z], None if classes is None else classes[z])
    return to_display(lung_window(hu[z]), lab, sy, sx, classes is not None, max_px, box)


def coronal_panel(hu: np.ndarray, infection: np.ndarray, spacing: Sequence[float], y: int,
                  classes: np.ndarray | None = None, max_px: int = 384, box: Box | None = None) -> np.ndarray:
    """RGB of the coronal plane at row ``y``: superior up, patient right on the left."""
    sx, _, sz = (float(s) for s in spacing)
    grey = lung_window(hu[::-1, y, :])
    lab = label_map(infection[::-1, y, :], None if classes is None else classes[::-1, y, :])
    return to_display(grey, lab, sz, sx, classes is not None, max_px, box)


def sagittal_panel(hu: np.ndarray, infection: np.ndarray, spacing: Sequence[float], x: int,
                   classes: np.ndarray | None = None, max_px: int = 384, box: Box | None = None) -> np.ndarray:
    """RGB of the sagittal plane at column ``x``: superior up, anterior on the left."""
    _, sy, sz = (float(s) for s in spacing)
    grey = lung_window(hu[::-1, :, x])
    lab = label_map(infection[::-1, :, x], None if classes is None else classes[::-1, :, x])
    return to_display(grey, lab, sz, sy, classes is not None, max_px, box)
