"""A volume's pictures: the montage and reformats as PNG bytes (drawn while the report computes) and written, with
the per-slice overlays on request, into the volume's folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from covseg.io.atomic import ensure_writable_dir
from covseg.reports.picks import through_plane_views
from covseg.reports.pictures.montage import montage_png
from covseg.reports.pictures.png import save_png
from covseg.reports.pictures.reformats import reformats_png
from covseg.reports.pictures.slice_overlay import OVERLAY_CHOICES, write_slice_overlays

__all__ = ["VOLUME_FIGURES", "volume_figure_pngs", "write_volume_figures"]

VOLUME_FIGURES = {"montage": "montage.png", "reformats": "reformats.png"}
"""The pictures of :func:`volume_figure_pngs`: report key -> file name."""


def volume_figure_pngs(hu: np.ndarray, lung: np.ndarray, infection: np.ndarray, spacing: Sequence[float], *,
                       classes: np.ndarray | None = None, name: str = "", n_slices: int = 12) -> dict[str, bytes]:
    """PNG bytes by file name: ``montage.png`` and ``reformats.png`` (not for a volume of too few slices:
    :func:`covseg.reports.picks.through_plane_views`)."""
    pngs = {VOLUME_FIGURES["montage"]: montage_png(hu, infection, spacing, lung=lung, classes=classes, n=n_slices,
                                                   title=name)}
    if through_plane_views(np.shape(hu)[0]):
        pngs[VOLUME_FIGURES["reformats"]] = reformats_png(hu, infection, spacing, lung=lung, classes=classes,
                                                          title=name)
    return pngs


def write_volume_figures(out_dir: str | Path, hu: np.ndarray, lung: np.ndarray, infection: np.ndarray,
                         spacing: Sequence[float], *, classes: np.ndarray | None = None, name: str = "",
                         overlays: str = "none", n_slices: int = 12,
                         drawn: dict[str, bytes] | None = None) -> dict[str, str]:
    """Write the pictures of :func:`volume_figure_pngs` (or those already ``drawn`` by it) and (``overlays``)
    ``overlays/slice_*.png`` into ``out_dir``.

    Returns ``{"montage": "montage.png", ["reformats": "reformats.png"], ["overlays": "overlays"]}`` (relative).
    """
    if overlays not in OVERLAY_CHOICES:
        raise ValueError(f"overlays must be one of {OVERLAY_CHOICES}, not {overlays!r}")
    out_dir = ensure_writable_dir(out_dir)
    if drawn is None:
        drawn = volume_figure_pngs(hu, lung, infection, spacing, classes=classes, name=name, n_slices=n_slices)
    files = {}
    for key, file_name in VOLUME_FIGURES.items():
        if file_name in drawn:
            save_png(drawn[file_name], out_dir / file_name)
            files[key] = file_name
    if overlays != "none":
        write_slice_overlays(out_dir / "overlays", hu, infection, spacing, classes=classes, which=overlays, name=name)
        files["overlays"] = "overlays"
    return files
