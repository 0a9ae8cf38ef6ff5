"""The axial montage of a volume: the slices of :func:`covseg.reports.picks.pick_slices` with their contours,
orientation letters, scale bars and infected areas, under a heading and over the colour key."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from covseg.reports.picks import pick_slices
from covseg.reports.pictures.agg import HEADING_PT, agg_figure, axes_box, bare, legend, letters, scale_bar, wrap_inches
from covseg.reports.pictures.contours import labels_found
from covseg.reports.pictures.panels import axial_panel
from covseg.reports.pictures.png import png_bytes
from covseg.reports.pictures.window import SLICE_TEXT, WINDOW_TEXT

__all__ = ["montage_png"]


def montage_png(hu: np.ndarray, infection: np.ndarray, spacing: Sequence[float], *, lung: np.ndarray | None = None,
                classes: np.ndarray | None = None, n: int = 12, title: str = "", cols: int = 4,
                dpi: int = 100) -> bytes:
    """PNG bytes of an axial montage (see :func:`~covseg.reports.picks.pick_slices`) with contours, orientation
    letters and areas."""
    zs, top = pick_slices(infection, lung, n)
    px_mm2 = float(spacing[0]) * float(spacing[1])
    cols = max(1, min(cols, len(zs)))  # a short volume's few slices fill the width instead of a black margin
    rows = (len(zs) + cols - 1) // cols
    aspect = np.shape(hu)[1] * float(spacing[1]) / (np.shape(hu)[2] * float(spacing[0]))  # height / width in mm
    starred = "; * = most infected slice of its part of the lungs" if top else ""  # no * where none is drawn
    heading = [f"{title}  axial, {WINDOW_TEXT}".strip(), f"infected area per slice{starred}", SLICE_TEXT]
    if cols >= 4:  # wide enough for the key on one line
        heading = [heading[0], "; ".join(heading[1:])]
    # placed in inches: each panel keeps its aspect and fills its cell, so no black bands open above and below it
    foot, pad, caption, panel_w = 0.25, 0.08, 0.22, 2.24
    width = cols * (panel_w + 2 * pad)
    heading = [part for line in heading for part in wrap_inches(line, width - 2 * pad, HEADING_PT)]
    head, panel_h = 0.12 + 0.17 * len(heading), panel_w * aspect
    height = head + rows * (caption + panel_h) + (rows - 1) * pad + foot
    fig = agg_figure((width, height))
    fig.subplots_adjust(left=pad / width, right=1 - pad / width, top=1 - (head + caption) / height,
                        bottom=foot / height, wspace=2 * pad / panel_w, hspace=(caption + pad) / panel_h)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        bare(ax)
    box = axes_box(fig, axes[0, 0], dpi)
    for ax, z in zip(axes.ravel(), zs):
        panel = axial_panel(hu, infection, spacing, z, classes, box=box)
        ax.imshow(panel, interpolation="nearest")
        scale_bar(ax, panel, np.shape(hu)[2] * float(spacing[0]) / panel.shape[1])
        cm2 = np.count_nonzero(np.asarray(infection[z]) > 0) * px_mm2 / 100.0
        mark = " *" if z in top else ""
        ax.set_title(f"z={z}{mark}  {cm2:.1f} cm\u00b2", color="white", fontsize=8)
        letters(ax, "A", "P", "R", "L")
    fig.suptitle("\n".join(heading), color="white", fontsize=HEADING_PT, y=1 - 0.06 / height, va="top")
    legend(fig, classes is not None, labels_found(infection, classes))
    return png_bytes(fig, dpi)
