"""The infection-per-slice curve of one volume (matplotlib's Agg, outside pyplot): infected and lung area of every
axial slice, and for a multi-class model each class's area in its overlay colour."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

__all__ = ["infection_curve_png"]


def _slice_axis(ax, slice_mm: float) -> None:
    """The slice index ``z`` of the montage and ``slices.csv`` along the top edge, so that a peak of the curve can be
    found among the montage's panels without dividing by the slice spacing."""
    from matplotlib.ticker import MaxNLocator

    step = slice_mm if slice_mm > 0 else 1.0
    top = ax.secondary_xaxis("top", functions=(lambda mm: mm / step, lambda z: z * step))
    top.xaxis.set_major_locator(MaxNLocator(integer=True))  # slices are counted in whole numbers
    top.set_xlabel("slice z", fontsize=8)
    top.tick_params(labelsize=8)


def infection_curve_png(rows: Sequence[dict], spacing: Sequence[float], *, title: str = "", dpi: int = 100,
                        class_columns: Sequence[str] = ()) -> bytes:
    """PNG bytes: infection area (cm², left axis) and lung area (cm², right axis) per slice, inferior to superior.

    ``rows``: per-slice dicts with ``slice``, ``infection_px`` and ``lung_px``
    (:func:`covseg.reports.volume.slice_rows`); ``spacing``: (x, y, z) mm. ``class_columns``: the rows' per-class
    pixel columns of classes 1, 2, ... (:func:`covseg.reports.volume.class_columns`), each drawn in its class's
    overlay colour beside the total, with a key.
    """
    from covseg.reports.pictures.agg import agg_figure
    from covseg.reports.pictures.contours import CLASS_COLOURS, CLASS_NAMES

    px_cm2 = float(spacing[0]) * float(spacing[1]) / 100.0
    z = np.array([r["slice"] for r in rows], float)
    pos_mm = z * float(spacing[2])
    inf = np.array([r["infection_px"] for r in rows], float) * px_cm2
    lung = np.array([r["lung_px"] for r in rows], float) * px_cm2
    fig = agg_figure((7.5, 2.6))
    ax = fig.subplots()
    twin = ax.twinx()
    twin.fill_between(pos_mm, lung, color="#9ab", alpha=0.35, step="mid", label="lung")
    twin.set_ylabel("lung cm\u00b2", color="#567")
    twin.set_ylim(bottom=0, top=max(1.0, float(lung.max(initial=0.0)) * 1.05))  # no lung: 0-1, not 0-0.05
    ax.set_zorder(twin.get_zorder() + 1)
    ax.patch.set_visible(False)
    # with classes, the total is drawn wide under them: where one class is all of it (a slice of ground glass only)
    # a thin total drawn first was hidden under the class's line, and the red of the key was nowhere in the plot
    ax.plot(pos_mm, inf, color="#d62728", lw=3.4 if class_columns else 1.5, drawstyle="steps-mid", label="infection",
            zorder=2)
    for k, column in enumerate(class_columns, start=1):
        area = np.array([r[column] for r in rows], float) * px_cm2
        colour = np.array(CLASS_COLOURS.get(k, (90, 90, 90))) / 255.0
        ax.plot(pos_mm, area, color=colour * 0.85, lw=1.3, drawstyle="steps-mid",
                label=CLASS_NAMES.get(k, column.removesuffix("_px")), zorder=3)
    if class_columns:
        ax.legend(loc="upper left", fontsize=7, frameon=False)
    ax.set_ylabel("infection cm\u00b2", color="#d62728")
    ax.set_ylim(bottom=0, top=max(1.0, float(inf.max(initial=0.0)) * 1.1))
    ax.set_xlabel("slice position from the most inferior slice (mm)  \u2192 superior")
    _slice_axis(ax, float(spacing[2]))
    ax.set_title(f"{title}  infection per slice".strip(), fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
