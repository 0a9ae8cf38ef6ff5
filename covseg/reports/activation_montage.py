"""The picture of ``covseg diagnose``: the slices the classifier scores highest, each as the segmentation's contour
beside the activation map, all in one field of view (the volume's lung box) at one scale.

Each panel shows the whole lung region of the volume, so a slice near the apex or the base, whose own lung box is
small, looks small; the activation map (computed on the slice's own lung-box crop, as the classifier saw it) is
drawn only over that crop, whose outline is drawn too, so what the classifier looked at is visible in place.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from covseg.reports.overlays import activation_beside_mask

__all__ = ["ActivationPanel", "activation_montage_png"]

CROP_OUTLINE = (120, 200, 255)
"""Colour of the classifier's crop outline (light blue)."""


@dataclass
class ActivationPanel:
    """One slice of the montage, every array 2D in the montage's field of view.

    ``image``: the slice windowed to [0, 1]; ``heat``: the activation map, NaN outside the classifier's crop;
    ``mask``: the infection mask or None; ``crop_box``: the classifier's crop ``(y0, y1, x0, x1)`` in the view."""

    z: int
    score: float
    image: np.ndarray
    heat: np.ndarray
    mask: np.ndarray | None
    crop_box: tuple[int, int, int, int]


def _outline(rgb: np.ndarray, box: tuple[int, int, int, int], colour: tuple[int, int, int]) -> None:
    y0, y1, x0, x1 = box
    y1, x1 = max(y1 - 1, y0), max(x1 - 1, x0)
    rgb[[y0, y1], x0:x1 + 1] = colour
    rgb[y0:y1 + 1, [x0, x1]] = colour


def activation_montage_png(panels: Sequence[ActivationPanel], height: int = 240, columns: int = 2,
                           title: str | None = None) -> bytes:
    """PNG bytes of a grid of panels (``columns`` across), each captioned ``slice z  P(COVID-19) s``; every panel
    is ``height`` pixels high and keeps the view's aspect ratio. ``title``: one line above the grid (the decision,
    so that high-scoring slices of a negative patient are not read as a positive finding)."""
    gap, caption = 4, 18
    top = caption + gap if title else 0
    if panels:
        view_h, view_w = panels[0].image.shape
        width = max(int(round(height * view_w / max(view_h, 1))), 1)
    else:
        width = height
    pair_width = 2 * width + gap
    rows = max((len(panels) + columns - 1) // columns, 1)
    sheet = Image.new("RGB", (columns * (pair_width + gap), top + rows * (height + caption)), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((4, 4), title, fill=(255, 255, 0))
    for k, p in enumerate(panels):
        if p.image.shape != panels[0].image.shape:
            raise ValueError(f"panel {k} (slice {p.z}) has view {p.image.shape}, not {panels[0].image.shape}")
        mask = p.mask if p.mask is not None and p.mask.any() else None
        pair = activation_beside_mask(p.image, p.heat, mask, gap=0)
        left, right = pair[:, :p.image.shape[1]].copy(), pair[:, p.image.shape[1]:].copy()
        _outline(right, p.crop_box, CROP_OUTLINE)
        x, y = (k % columns) * (pair_width + gap), top + (k // columns) * (height + caption)
        for i, half in enumerate((left, right)):
            tile = Image.fromarray(half).resize((width, height), Image.BILINEAR)
            sheet.paste(tile, (x + i * (width + gap), y + caption))
        draw.text((x + 4, y + 3), f"slice {p.z}  P(COVID-19) {p.score:.2f}", fill=(255, 255, 255))
    if not panels:
        draw.text((8, top + 8), "no lung slice", fill=(255, 255, 255))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()
