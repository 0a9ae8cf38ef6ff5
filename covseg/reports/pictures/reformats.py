"""The coronal and sagittal reformats of a volume through its most infected planes (else the lungs' centre)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from covseg.reports.pictures.agg import agg_figure, bare, legend, letters, scale_bar
from covseg.reports.pictures.contours import labels_found
from covseg.reports.pictures.panels import coronal_panel, sagittal_panel
from covseg.reports.pictures.png import png_bytes
from covseg.reports.pictures.window import WINDOW_TEXT

__all__ = ["FLAT_REFORMATS", "reformats_png"]


def _counts_along(mask: np.ndarray, axis_keep: int) -> np.ndarray:
    """Non-zero voxels of a ``[z, y, x]`` mask per row (``axis_keep`` 1) or column (2), summed slice by slice, so that
    no full-volume copy is made (the pictures are drawn while the report computes on the same volumes)."""
    counts = np.zeros(mask.shape[axis_keep], np.int64)
    for plane in mask:
        counts += np.count_nonzero(plane, axis=1 if axis_keep == 1 else 0)
    return counts


def _centre(mask: np.ndarray, axis_keep: int, fallback: np.ndarray | None) -> int:
    """Row (``axis_keep`` 1) or column (2) with the most non-zero ``mask`` voxels (else the same of ``fallback``, else
    the middle)."""
    for m in (mask, fallback):
        if m is not None:
            counts = _counts_along(m, axis_keep)
            if counts.any():
                return int(np.argmax(counts))
    return mask.shape[axis_keep] // 2


FLAT_REFORMATS = 0.5
"""Reformats whose panels are both less than half as high as wide (a slab of few thin slices: 20 x 2 mm across
500 mm) are drawn one above the other across the figure's width, not side by side as strips a few pixels high."""


def reformats_png(hu: np.ndarray, infection: np.ndarray, spacing: Sequence[float], *,
                  lung: np.ndarray | None = None, classes: np.ndarray | None = None, title: str = "",
                  dpi: int = 100) -> bytes:
    """PNG bytes of a coronal and a sagittal reformat through the most infected plane (else the lungs' centre)."""
    inf = np.asarray(infection)  # masks: 0 outside, counted as they are (no full-volume copies beside the report's)
    lung_m = None if lung is None else np.asarray(lung)
    y = _centre(inf, 1, lung_m)
    if inf.any():
        x = _centre(inf, 2, lung_m)
    elif lung_m is not None and np.any(lung_m == 1):
        x = _centre(lung_m == 1, 2, None)  # through the right lung
    else:
        x = _centre(inf, 2, lung_m)
    cor = coronal_panel(hu, infection, spacing, y, classes)
    sag = sagittal_panel(hu, infection, spacing, x, classes)
    tall = (cor.shape[0] / cor.shape[1], sag.shape[0] / sag.shape[1])
    flat = max(tall) < FLAT_REFORMATS
    if flat:  # a thin slab: one above the other, each 8.6 inches wide, placed in inches (titles between them)
        width, head, caption, foot = 8.6, 0.45, 0.3, 0.35
        height = head + 2 * caption + width * sum(tall) + foot
        fig = agg_figure((9, height))
        top, axes = height - head, []
        for ratio in tall:
            top -= caption + width * ratio
            axes.append(fig.add_axes(((9 - width) / 18, top / height, width / 9, width * ratio / height)))
    else:  # side by side, equally high, placed in inches so that each panel fills its box (no black bands)
        head, caption, foot, gap, most_high = 0.4, 0.25, 0.3, 0.45, 5.5
        panel_h = min((9 - 0.2 - gap) / (1 / tall[0] + 1 / tall[1]), most_high)
        widths = [panel_h / t for t in tall]
        height = head + caption + panel_h + foot
        fig = agg_figure((9, height))
        left = (9 - sum(widths) - gap) / 2
        axes = []
        for w in widths:
            axes.append(fig.add_axes((left / 9, foot / height, w / 9, panel_h / height)))
            left += w + gap
    _, ny, nx = np.shape(hu)
    width_mm = (nx * float(spacing[0]), ny * float(spacing[1]))
    for ax, img, name, sides, across in (
            (axes[0], cor, f"coronal y={y} of 0-{ny - 1} (0 = most anterior)", ("S", "I", "R", "L"), width_mm[0]),
            (axes[1], sag, f"sagittal x={x} of 0-{nx - 1} (0 = patient's right)", ("S", "I", "A", "P"), width_mm[1])):
        ax.imshow(img, interpolation="nearest")
        scale_bar(ax, img, across / img.shape[1])
        bare(ax)
        ax.set_title(name, color="white", fontsize=9)
        letters(ax, *sides)
    fig.suptitle(f"{title}  reformats, {WINDOW_TEXT}".strip(), color="white", fontsize=9, y=1 - 0.08 / height,
                 va="top")
    legend(fig, classes is not None, labels_found(infection, classes))
    return png_bytes(fig, dpi)
