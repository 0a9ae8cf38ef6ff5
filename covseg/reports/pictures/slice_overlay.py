"""Per-slice overlays: one PNG per axial slice, the panel with its letters and scale bar under a caption that says
what it shows (the volume, the slice, its infected area, the window, the colour key)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from covseg.io.atomic import ensure_writable_dir
from covseg.reports.pictures.contours import CLASS_COLOURS, CLASS_NAMES, INFECTION_COLOUR
from covseg.reports.pictures.panels import axial_panel
from covseg.reports.pictures.pil_marks import draw_letters, draw_scale_bar, flow, pil_font
from covseg.reports.pictures.png import save_png
from covseg.reports.pictures.window import SLICE_TEXT, WINDOW_TEXT

__all__ = ["OVERLAY_CHOICES", "OVERLAY_LINE", "OVERLAY_MIN_PX", "slice_overlay", "write_slice_overlays"]

OVERLAY_CHOICES = ("none", "infected", "all")
"""Per-slice overlays: none; slices holding infection; every slice."""
OVERLAY_MIN_PX = 256
"""A per-slice overlay smaller than this (a 64-pixel scan: 128 pixels) is enlarged by whole pixels to at least it."""
OVERLAY_LINE = 17
"""Height of one line of a per-slice overlay's caption (pixels)."""


def slice_overlay(hu: np.ndarray, infection: np.ndarray, spacing: Sequence[float], z: int, *,
                  classes: np.ndarray | None = None, name: str = "", max_px: int = 512) -> np.ndarray:
    """uint8 RGB of one per-slice overlay: :func:`axial_panel` with its orientation letters, under a caption (the
    volume, the slice index, its infected area, the window and the colour key), so that the file read on its own
    says what it shows."""
    panel = axial_panel(hu, infection, spacing, z, classes, max_px=max_px)
    if max(panel.shape[:2]) < OVERLAY_MIN_PX:  # a coarse scan: whole pixels enlarged, so that the caption fits
        k = -(-OVERLAY_MIN_PX // max(panel.shape[:2]))
        panel = np.repeat(np.repeat(panel, k, axis=0), k, axis=1)
    cm2 = np.count_nonzero(np.asarray(infection[z]) > 0) * float(spacing[0]) * float(spacing[1]) / 100.0
    multi = classes is not None
    keys = [(CLASS_NAMES[k], c) for k, c in CLASS_COLOURS.items()] if multi else [("infection", INFECTION_COLOUR)]
    parts = [(f"{name}  axial z={z}".strip(), (255, 255, 255)), (f"{cm2:.1f} cm\u00b2", (255, 255, 255)),
             (WINDOW_TEXT, (200, 200, 200)), (f"({SLICE_TEXT})", (200, 200, 200))]
    parts += [(f"\u25a0 {text}", colour) for text, colour in keys]
    font = pil_font()
    h, w = panel.shape[:2]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = flow(measure, parts, w, font)
    top = len(lines) * OVERLAY_LINE + 2
    sheet = Image.new("RGB", (w, top + h), (0, 0, 0))
    sheet.paste(Image.fromarray(panel), (0, top))
    draw = ImageDraw.Draw(sheet)
    for i, line in enumerate(lines):
        for x, text, colour in line:
            draw.text((x, 2 + i * OVERLAY_LINE), text, fill=colour, font=font)
    if min(h, w) >= 96:  # smaller panels would be covered by the letters
        draw_letters(draw, (0, top, w, h), ("A", "P", "R", "L"), font)
        draw_scale_bar(draw, (0, top, w, h), np.shape(hu)[2] * float(spacing[0]) / w, font)
    return np.asarray(sheet)


def write_slice_overlays(folder: str | Path, hu: np.ndarray, infection: np.ndarray, spacing: Sequence[float], *,
                         classes: np.ndarray | None = None, which: str = "infected", name: str = "") -> list[Path]:
    """One PNG per axial slice (``which``: ``"infected"`` slices or ``"all"``) as ``slice_<z:04d>.png``
    (:func:`slice_overlay`, captioned with ``name``)."""
    if which not in OVERLAY_CHOICES:
        raise ValueError(f"overlays must be one of {OVERLAY_CHOICES}, not {which!r}")
    if which == "none":
        return []
    folder = ensure_writable_dir(folder)
    inf = np.asarray(infection) > 0
    zs = range(inf.shape[0]) if which == "all" else np.nonzero(inf.reshape(inf.shape[0], -1).any(axis=1))[0]
    return [save_png(slice_overlay(hu, infection, spacing, int(z), classes=classes, name=name),
                     folder / f"slice_{z:04d}.png") for z in zs]
