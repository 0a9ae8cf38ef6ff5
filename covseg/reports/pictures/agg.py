"""matplotlib figures drawn by Agg outside pyplot, and what the figures put on and around their panels:
orientation letters, scale bars, the colour key and headings wrapped to the figure's width."""

from __future__ import annotations

import numpy as np
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from covseg.reports.pictures.contours import CLASS_COLOURS, CLASS_NAMES, INFECTION_COLOUR
from covseg.reports.pictures.scale import bar_text, scale_bar_mm

__all__ = ["HEADING_PT", "agg_figure", "axes_box", "bare", "legend", "letters", "scale_bar", "wrap_inches"]

HEADING_PT = 9
"""Font size of the pictures' headings (points)."""


def agg_figure(figsize: tuple[float, float]) -> Figure:
    """A matplotlib figure drawn by Agg, outside pyplot: no global figure registry and no backend switch for whoever
    imports covseg, so pictures can be drawn in several threads at once."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def bare(ax: Axes) -> None:
    """No axis lines, ticks or tick labels. The ticks are removed, not only hidden: ``tight_layout`` and the title
    placement otherwise compute every hidden tick's text extent (about half of the montage's drawing time)."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.axis("off")


def letters(ax: Axes, top: str, bottom: str, left: str, right: str) -> None:
    """Orientation letters at the panel's edges, outlined in black: without the outline the light blue letters
    vanished on the white soft tissue of the chest wall (R and L lie on it in most axial slices). They lie inside
    the panel, so ``tight_layout`` leaves them out (measuring them cost more than drawing their outlines)."""
    style = {"color": "#7fd4ff", "fontsize": 8, "fontweight": "bold", "transform": ax.transAxes, "in_layout": False,
             "path_effects": [patheffects.withStroke(linewidth=2, foreground="black")]}
    ax.text(0.5, 0.98, top, ha="center", va="top", **style)
    ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **style)
    ax.text(0.02, 0.5, left, ha="left", va="center", **style)
    ax.text(0.98, 0.5, right, ha="right", va="center", **style)


def scale_bar(ax: Axes, panel: np.ndarray, mm_per_px: float) -> None:
    """A scale bar in the panel's bottom right corner (:func:`scale_bar_mm` long), in the letters' colour outlined
    in black, its length written above it: without one a 64-pixel scan and a 512-pixel scan looked the same size."""
    h, w = panel.shape[:2]
    mm = scale_bar_mm(w * mm_per_px)
    length = mm / mm_per_px
    x1, y = w - 0.5 - 0.03 * w, h - 0.5 - 0.05 * h
    outline = [patheffects.withStroke(linewidth=3, foreground="black")]
    ax.plot([x1 - length, x1], [y, y], color="#7fd4ff", lw=1.5, solid_capstyle="butt", path_effects=outline)
    ax.text(x1 - length / 2, y - 0.02 * h, bar_text(mm), color="#7fd4ff", fontsize=7, ha="center", va="bottom",
            in_layout=False, path_effects=[patheffects.withStroke(linewidth=2, foreground="black")])
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)


def axes_box(fig: Figure, ax: Axes, dpi: int) -> tuple[int, int]:
    """The whole pixels (height, width) ``ax`` covers in a PNG written at ``dpi``: a panel no larger is shown at 1:1
    or enlarged. Shrunk by matplotlib's nearest-neighbour resampling instead, it loses whole rows and columns, and
    with them pieces of the 1-pixel contours (the montage drew a 512-pixel slice at 256 pixels on 224: outlines in
    dashes)."""
    width, height = fig.get_size_inches()
    pos = ax.get_position()
    return max(1, int(pos.height * height * dpi)), max(1, int(pos.width * width * dpi))


def legend(fig: Figure, multi: bool, found: set[int] | None = None) -> list[Text]:
    """The colour key along the figure's bottom edge, each entry placed after the last one's drawn width (fixed
    steps overlapped on the narrow montage of a short volume). A label not in ``found`` (when given) is keyed
    "none found": a key to a colour drawn nowhere left the reader to wonder whether the contours had failed."""
    keys = CLASS_COLOURS if multi else {1: INFECTION_COLOUR}
    names = CLASS_NAMES if multi else {1: "infection"}
    parts = [(names[k] + ("" if found is None or k in found else ": none found"), c) for k, c in keys.items()]
    renderer = fig.canvas.get_renderer()
    x, texts = 0.01, []
    for text, colour in parts:
        item = fig.text(x, 0.005, f"\u25a0 {text}", color=np.array(colour) / 255.0, fontsize=8, va="bottom")
        texts.append(item)
        box = item.get_window_extent(renderer).transformed(fig.transFigure.inverted())
        x = box.x1 + 0.03
    return texts


def wrap_inches(text: str, width: float, points: float) -> list[str]:
    """``text`` broken between words into lines no wider than ``width`` inches in matplotlib's default font at
    ``points`` (a word wider than that keeps a line of its own): the one-column montage of a single-slice scan is
    2.4 inches wide, and its heading ran off both edges."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    prop, measure = FontProperties(size=points), TextToPath()

    def inches(line: str) -> float:
        return measure.get_text_width_height_descent(line, prop, ismath=False)[0] / 72.0

    lines: list[str] = []
    for word in text.split(" "):
        if lines and inches(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]
