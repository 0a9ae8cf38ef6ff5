"""What the Pillow pictures (per-slice overlays, the activation montage) write on their panels: the font,
orientation letters, the scale bar and captions laid out in lines."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import matplotlib
from PIL import ImageDraw, ImageFont

from covseg.reports.pictures.contours import Colour
from covseg.reports.pictures.scale import bar_text, scale_bar_mm

__all__ = ["FONT_PX", "LETTER_COLOUR", "draw_letters", "draw_scale_bar", "flow", "pil_font"]

LETTER_COLOUR: Colour = (127, 212, 255)
"""Orientation letters (``#7fd4ff``)."""
FONT_PX = 12
"""Text size of the pictures drawn with Pillow (per-slice overlays, the activation montage), in pixels."""

Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


@lru_cache(maxsize=4)
def pil_font(size: int = FONT_PX) -> Font:
    """DejaVu Sans (shipped with matplotlib) at ``size`` pixels for text drawn with Pillow: it has the ² and ≥ of
    the captions, which Pillow's built-in font draws as empty boxes; Pillow's font at that size where the file is
    missing."""
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:
        return ImageFont.load_default(size)


def draw_letters(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], letters: Sequence[str],
                 font: Font | None = None) -> None:
    """Orientation ``letters`` (top, bottom, left, right) at the edges of ``box`` = ``(x, y, width, height)``,
    outlined in black so that they read on bright tissue."""
    x, y, width, height = box
    style = {"fill": LETTER_COLOUR, "font": font or pil_font(), "stroke_width": 2, "stroke_fill": (0, 0, 0)}
    top, bottom, left, right = letters
    draw.text((x + width // 2, y + 2), top, anchor="mt", **style)
    draw.text((x + width // 2, y + height - 2), bottom, anchor="mb", **style)
    draw.text((x + 3, y + height // 2), left, anchor="lm", **style)
    draw.text((x + width - 3, y + height // 2), right, anchor="rm", **style)


def draw_scale_bar(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], mm_per_px: float,
                   font: Font | None = None) -> None:
    """A scale bar in the bottom right corner of ``box`` = ``(x, y, width, height)``, in the letters' colour
    outlined in black, its length written above it."""
    x, y, width, height = box
    mm = scale_bar_mm(width * mm_per_px)
    length = max(1, int(round(mm / mm_per_px)))
    x1, y1 = x + width - 6, y + height - 8
    draw.rectangle([x1 - length - 1, y1 - 2, x1 + 1, y1 + 2], fill=(0, 0, 0))
    draw.rectangle([x1 - length, y1 - 1, x1, y1 + 1], fill=LETTER_COLOUR)
    draw.text((x1 - length / 2, y1 - 4), bar_text(mm), anchor="mb", fill=LETTER_COLOUR, font=font or pil_font(),
              stroke_width=2, stroke_fill=(0, 0, 0))


def flow(draw: ImageDraw.ImageDraw, parts: Sequence[tuple[str, Colour]], width: int,
         font: Font) -> list[list[tuple[int, str, Colour]]]:
    """``(text, colour)`` parts laid out left to right in lines no wider than ``width``: ``[[(x, text, colour)]]``.
    A part that does not fit on the line is started on the next one, and one wider than ``width`` (a narrow panel
    of a coarse scan) is broken between its words."""
    lines: list[list[tuple[int, str, Colour]]] = [[]]
    x, space = 4, int(draw.textlength(" ", font=font))
    for text, colour in parts:
        pieces = [text] if draw.textlength(text, font=font) <= width - 8 else text.split(" ")
        for k, piece in enumerate(pieces):
            w = int(draw.textlength(piece, font=font))
            if lines[-1] and x + w > width - 4:
                lines.append([])
                x = 4
            lines[-1].append((x, piece, colour))
            x += w + (space if k < len(pieces) - 1 else 10)
    return lines
