"""The picture of ``covseg diagnose``: the slices the classifier scores highest, each as the segmentation's contour
beside the activation map, all in one field of view (the volume's lung box) at one scale.

Each panel shows the whole lung region of the volume, so a slice near the apex or the base, whose own lung box is
small, looks small; the activation map (computed on the slice's own lung-box crop, as the classifier saw it) is
drawn only over that crop, whose outline is drawn too, so what the classifier looked at is visible in place.
Every half carries the orientation letters of an axial slice (anterior up, patient right on the left), and a key
under the grid gives the map's colour scale (each map spans its own minimum to maximum: the colours compare places
within one slice, not slices) and what the red contour and the blue outline are.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib
import numpy as np
from PIL import Image, ImageDraw

from covseg.reports.pictures.contours import INFECTION_COLOUR
from covseg.reports.pictures.heatmap import activation_beside_mask
from covseg.reports.pictures.pil_marks import FONT_PX, LETTER_COLOUR, draw_letters, draw_scale_bar
from covseg.reports.pictures.pil_marks import pil_font as montage_font

__all__ = ["FONT_PX", "LETTER_COLOUR", "ActivationPanel", "KEY_HEIGHT", "activation_montage_png", "montage_font"]

CROP_OUTLINE = (120, 200, 255)
"""Colour of the classifier's crop outline (light blue)."""
CAPTION, GAP = 18, 4
KEY_HEIGHT = 2 * CAPTION + GAP
"""Height of the key strip under the grid (two lines)."""
LETTERS_MIN_PX = 96
"""Tiles lower than this get no orientation letters (they would cover the slice)."""
KEY_LINES = ("activation map (JCS Eq. 1-2), each panel scaled to its own range:",
             "infection (segmentation; white over the map)", "crop the classifier scored",
             "CT in the classifier's window (L -430 W 1350 HU); slice z: 0 = most inferior")


@dataclass
class ActivationPanel:
    """One slice of the montage, every array 2D in the montage's field of view.

    ``image``: the slice windowed to [0, 1]; ``heat``: the activation map, NaN outside the classifier's crop;
    ``mask``: the infection mask or None; ``crop_box``: the classifier's crop ``(y0, y1, x0, x1)`` in the view;
    ``pixel_mm``: the view's pixel size ``(row, column)`` in mm, for the scale bar (None: no bar)."""

    z: int
    score: float
    image: np.ndarray
    heat: np.ndarray
    mask: np.ndarray | None
    crop_box: tuple[int, int, int, int]
    pixel_mm: tuple[float, float] | None = None


def _outline(rgb: np.ndarray, box: tuple[int, int, int, int], colour: tuple[int, int, int], width: int = 2) -> None:
    """The edges of ``box`` = ``(y0, y1, x0, x1)`` (end exclusive), ``width`` pixels wide inside it (2: a 1-pixel
    line drawn at the tile's size is lost on the blue of the map)."""
    y0, y1, x0, x1 = box
    for _ in range(width):
        y1, x1 = max(y1 - 1, y0), max(x1 - 1, x0)
        rgb[[y0, y1], x0:x1 + 1] = colour
        rgb[y0:y1 + 1, [x0, x1]] = colour
        y0, x0 = min(y0 + 1, y1), min(x0 + 1, x1)


def _at_size(p: ActivationPanel, height: int, width: int) -> ActivationPanel:
    """``p`` resampled to the tile's ``height`` x ``width`` pixels (the slice and the map bilinear, the mask nearest,
    the crop box scaled), so that the contour and the crop outline are drawn 1 pixel wide at the size they are shown:
    drawn on the view and shrunk with it (a 512-pixel slice on a 354-pixel tile), they were blended into the CT,
    a faint pink line."""
    view_h, view_w = p.image.shape
    size = (width, height)
    image = np.asarray(Image.fromarray(np.asarray(p.image, np.float32)).resize(size, Image.BILINEAR))
    covered = np.isfinite(p.heat)
    heat = np.asarray(Image.fromarray(np.where(covered, p.heat, 0.0).astype(np.float32)).resize(size, Image.BILINEAR))
    inside = np.asarray(Image.fromarray(covered.astype(np.uint8)).resize(size, Image.NEAREST)) > 0
    mask = None
    if p.mask is not None:
        mask = np.asarray(Image.fromarray((np.asarray(p.mask) > 0).astype(np.uint8)).resize(size, Image.NEAREST)) > 0
    y0, y1, x0, x1 = p.crop_box
    box = (int(round(y0 * height / view_h)), int(round(y1 * height / view_h)), int(round(x0 * width / view_w)),
           int(round(x1 * width / view_w)))
    return ActivationPanel(p.z, p.score, image, np.where(inside, heat, np.nan), mask, box, p.pixel_mm)


def _wrap(text: str, width: int, draw: ImageDraw.ImageDraw, font) -> list[str]:
    """``text`` in lines no wider than ``width`` pixels (a single word longer than that keeps its line)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def _key(draw: ImageDraw.ImageDraw, y: int, sheet_width: int, font, with_contour: bool) -> None:
    """Two lines under the grid: the jet scale from low to high, then the contour, the crop outline and the window."""
    x = 4
    draw.text((x, y + 3), KEY_LINES[0], fill=(255, 255, 255), font=font)
    x += int(draw.textlength(KEY_LINES[0], font=font)) + 8
    bar = max(min(160, sheet_width - x - 40), 40)
    for text, at in (("low", x), ("high", x + bar + 34)):
        draw.text((at, y + 3), text, fill=(255, 255, 255), font=font)
    ramp = matplotlib.colormaps["jet"](np.linspace(0.0, 1.0, bar))[:, :3]
    for i, colour in enumerate((ramp * 255).round().astype(int)):
        draw.line([(x + 28 + i, y + 4), (x + 28 + i, y + CAPTION - 4)], fill=tuple(int(c) for c in colour))
    y2, x = y + CAPTION + GAP, 4
    parts = ([(INFECTION_COLOUR, KEY_LINES[1])] if with_contour else []) + [(CROP_OUTLINE, KEY_LINES[2])]
    for colour, text in parts:
        draw.rectangle([x, y2 + 4, x + 16, y2 + CAPTION - 5], outline=colour, width=2)
        draw.text((x + 22, y2 + 3), text, fill=(255, 255, 255), font=font)
        x += 22 + int(draw.textlength(text, font=font)) + 16
    draw.text((x, y2 + 3), KEY_LINES[3], fill=(200, 200, 200), font=font)


def activation_montage_png(panels: Sequence[ActivationPanel], height: int = 240, columns: int = 2,
                           title: str | None = None) -> bytes:
    """PNG bytes of a grid of panels (``columns`` across), each captioned ``slice z  P(COVID-19) s``; every panel
    is ``height`` pixels high and keeps the view's aspect ratio. ``title``: above the grid, wrapped to its width
    (the decision, so that high-scoring slices of a negative patient are not read as a positive finding). A key
    strip of :data:`KEY_HEIGHT` pixels under the grid explains the colours."""
    font = montage_font()
    if panels:
        view_h, view_w = panels[0].image.shape
        width = max(int(round(height * view_w / max(view_h, 1))), 1)
    else:
        width = height
    pair_width = 2 * width + GAP
    rows = max((len(panels) + columns - 1) // columns, 1)
    sheet_width = columns * (pair_width + GAP)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title_lines = _wrap(title, sheet_width - 8, measure, font) if title else []
    top = len(title_lines) * CAPTION + GAP if title_lines else 0
    grid_bottom = top + rows * (height + CAPTION)
    sheet = Image.new("RGB", (sheet_width, grid_bottom + KEY_HEIGHT), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    for i, line in enumerate(title_lines):
        draw.text((4, 3 + i * CAPTION), line, fill=(255, 255, 0), font=font)
    for k, p in enumerate(panels):
        if p.image.shape != panels[0].image.shape:
            raise ValueError(f"panel {k} (slice {p.z}) has view {p.image.shape}, not {panels[0].image.shape}")
        tile = _at_size(p, height, width)
        mask = tile.mask if tile.mask is not None and tile.mask.any() else None
        pair = activation_beside_mask(tile.image, tile.heat, mask, gap=0)
        left, right = pair[:, :width].copy(), pair[:, width:].copy()
        _outline(right, tile.crop_box, CROP_OUTLINE)
        x, y = (k % columns) * (pair_width + GAP), top + (k // columns) * (height + CAPTION)
        for i, half in enumerate((left, right)):
            sheet.paste(Image.fromarray(half), (x + i * (width + GAP), y + CAPTION))
            if height >= LETTERS_MIN_PX:
                draw_letters(draw, (x + i * (width + GAP), y + CAPTION, width, height), ("A", "P", "R", "L"), font)
        if p.pixel_mm is not None and height >= LETTERS_MIN_PX:  # on the CT half: its scale along the rows
            draw_scale_bar(draw, (x, y + CAPTION, width, height), p.pixel_mm[1] * p.image.shape[1] / width, font)
        draw.text((x + 4, y + 3), f"slice {p.z}  P(COVID-19) {p.score:.2f}", fill=(255, 255, 255), font=font)
    if not panels:
        draw.text((8, top + 8), "no lung slice", fill=(255, 255, 255), font=font)
    _key(draw, grid_bottom, sheet_width, font, any(p.mask is not None and p.mask.any() for p in panels))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()
