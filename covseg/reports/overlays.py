"""Pictures of one volume: infection contours over the lung-window CT (axial montage, coronal and sagittal
reformats, per-slice overlays) and heat-map overlays of activation maps.

Inputs are LPS ``[z, y, x]`` arrays as :mod:`covseg.io.read` gives them (z grows to the head, y to the back,
x to the patient's left) with ``spacing`` (x, y, z) mm. Panels are shown in the radiological convention:

* axial: patient anterior up, patient right on the image's left (array rows as they are);
* coronal: superior up (z flipped), patient right on the image's left;
* sagittal: superior up (z flipped), anterior on the image's left.

Every panel is resampled to square display pixels from the spacing (so a 5 mm-slice coronal keeps its true
height) and built as a uint8 RGB array by :func:`axial_panel`, :func:`coronal_panel`, :func:`sagittal_panel`
(testable without matplotlib); matplotlib (Agg) only lays them out with titles and orientation letters.
Contours are the inner boundary pixels of each mask: infection red for a binary model; for a 0/1/2 label map
ground-glass opacity (1) yellow and consolidation (2) magenta.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage
from skimage.transform import resize

from covseg.io.atomic import atomic_path, ensure_writable_dir
from covseg.reports.picks import spaced_top, through_plane_views

__all__ = [
    "CLASS_COLOURS",
    "activation_beside_mask",
    "INFECTION_COLOUR",
    "LUNG_WINDOW",
    "OVERLAY_CHOICES",
    "VOLUME_FIGURES",
    "agg_figure",
    "axial_panel",
    "coronal_panel",
    "draw_scale_bar",
    "heatmap_overlay",
    "inner_edge",
    "labels_found",
    "lung_window",
    "montage_png",
    "pil_font",
    "slice_overlay",
    "pick_slices",
    "reformats_png",
    "sagittal_panel",
    "scale_bar_mm",
    "volume_figure_pngs",
    "write_slice_overlays",
    "write_volume_figures",
]

LUNG_WINDOW = (-600.0, 1500.0)
"""Lung window (level, width) in HU."""
INFECTION_COLOUR = (255, 40, 40)
CLASS_COLOURS = {1: (255, 215, 0), 2: (255, 0, 255)}
CLASS_NAMES = {1: "ground-glass opacity", 2: "consolidation"}
OVERLAY_CHOICES = ("none", "infected", "all")
"""Per-slice overlays: none; slices holding infection; every slice."""
LETTER_COLOUR = (127, 212, 255)
"""Orientation letters (``#7fd4ff``)."""
FONT_PX = 12
"""Text size of the pictures drawn with Pillow (per-slice overlays, the activation montage), in pixels."""


@lru_cache(maxsize=4)
def pil_font(size: int = FONT_PX) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans (shipped with matplotlib) at ``size`` pixels for text drawn with Pillow: it has the ² and ≥ of
    the captions, which Pillow's built-in font draws as empty boxes; Pillow's font at that size where the file is
    missing."""
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:
        return ImageFont.load_default(size)


def draw_letters(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], letters: Sequence[str],
                 font=None) -> None:
    """Orientation ``letters`` (top, bottom, left, right) at the edges of ``box`` = ``(x, y, width, height)``,
    outlined in black so that they read on bright tissue."""
    x, y, width, height = box
    style = {"fill": LETTER_COLOUR, "font": font or pil_font(), "stroke_width": 2, "stroke_fill": (0, 0, 0)}
    top, bottom, left, right = letters
    draw.text((x + width // 2, y + 2), top, anchor="mt", **style)
    draw.text((x + width // 2, y + height - 2), bottom, anchor="mb", **style)
    draw.text((x + 3, y + height // 2), left, anchor="lm", **style)
    draw.text((x + width - 3, y + height // 2), right, anchor="rm", **style)


SCALE_STEPS_MM = (10, 20, 50, 100)
"""Lengths a scale bar may have (mm): the longest that fits in a quarter of the panel's width."""


def scale_bar_mm(width_mm: float) -> int:
    """The scale bar's length for a panel ``width_mm`` wide (1 cm on a panel narrower than 4 cm)."""
    fitting = [mm for mm in SCALE_STEPS_MM if mm <= width_mm / 4.0]
    return fitting[-1] if fitting else SCALE_STEPS_MM[0]


def _bar_text(mm: int) -> str:
    return f"{mm // 10} cm"


def draw_scale_bar(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], mm_per_px: float, font=None) -> None:
    """A scale bar in the bottom right corner of ``box`` = ``(x, y, width, height)`` (Pillow), in the letters'
    colour outlined in black, its length written above it."""
    x, y, width, height = box
    mm = scale_bar_mm(width * mm_per_px)
    length = max(1, int(round(mm / mm_per_px)))
    x1, y1 = x + width - 6, y + height - 8
    draw.rectangle([x1 - length - 1, y1 - 2, x1 + 1, y1 + 2], fill=(0, 0, 0))
    draw.rectangle([x1 - length, y1 - 1, x1, y1 + 1], fill=LETTER_COLOUR)
    draw.text((x1 - length / 2, y1 - 4), _bar_text(mm), anchor="mb", fill=LETTER_COLOUR, font=font or pil_font(),
              stroke_width=2, stroke_fill=(0, 0, 0))


WINDOW_TEXT = f"lung window L {LUNG_WINDOW[0]:g} W {LUNG_WINDOW[1]:g} HU"
"""The window as the pictures name it."""
SLICE_TEXT = "z: 0 = most inferior slice"
"""How the pictures number axial slices (as ``slices.csv``; a PACS usually numbers a chest CT from the top)."""


def lung_window(hu: np.ndarray, level: float = LUNG_WINDOW[0], width: float = LUNG_WINDOW[1]) -> np.ndarray:
    """HU -> float32 [0, 1] in the lung window."""
    lo = level - width / 2.0
    return np.clip((np.asarray(hu, np.float32) - lo) / width, 0.0, 1.0)


def _labels(infection: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
    """One uint8 label map: the class map when given (0/1/2), else the infection mask as 0/1."""
    if classes is not None:
        return np.asarray(classes, np.uint8)
    return (np.asarray(infection) > 0).astype(np.uint8)


def _colours(multi: bool) -> dict[int, tuple[int, int, int]]:
    return CLASS_COLOURS if multi else {1: INFECTION_COLOUR}


def inner_edge(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` with a 4-neighbour outside it (the image border counts as inside): skimage's
    ``find_boundaries(mask, mode="inner")``, without importing ``skimage.segmentation`` (0.25 s, scipy.sparse and
    scipy.optimize with it) in the pictures' thread."""
    return mask & ~ndimage.binary_erosion(mask, border_value=1)


Box = tuple[int, int]
"""A panel's largest size in pixels, (height, width)."""


def _to_display(grey: np.ndarray, labels: np.ndarray, row_mm: float, col_mm: float, multi: bool,
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
    thick = max(shape) >= 320
    for value, colour in _colours(multi).items():
        mask = lab == value
        if not mask.any():
            continue
        edge = inner_edge(mask)
        if thick:
            edge = ndimage.binary_dilation(edge) & mask
        rgb[edge] = colour
    return rgb


def axial_panel(hu: np.ndarray, infection: np.ndarray, spacing: Sequence[float], z: int,
                classes: np.ndarray | None = None, max_px: int = 384, box: Box | None = None) -> np.ndarray:
    """RGB of axial slice ``z``: anterior up, patient right on the left (``max_px``, ``box``: :func:`_to_display`)."""
    sx, sy, _ = (float(s) for s in spacing)
    lab = _labels(infection[z], None if classes is None else classes[z])
    return _to_display(lung_window(hu[z]), lab, sy, sx, classes is not None, max_px, box)


def coronal_panel(hu: np.ndarray, infection: np.ndarray, spacing: Sequence[float], y: int,
                  classes: np.ndarray | None = None, max_px: int = 384, box: Box | None = None) -> np.ndarray:
    """RGB of the coronal plane at row ``y``: superior up, patient right on the left."""
    sx, _, sz = (float(s) for s in spacing)
    grey = lung_window(hu[::-1, y, :])
    lab = _labels(infection[::-1, y, :], None if classes is None else classes[::-1, y, :])
    return _to_display(grey, lab, sz, sx, classes is not None, max_px, box)


def sagittal_panel(hu: np.ndarray, infection: np.ndarray, spacing: Sequence[float], x: int,
                   classes: np.ndarray | None = None, max_px: int = 384, box: Box | None = None) -> np.ndarray:
    """RGB of the sagittal plane at column ``x``: superior up, anterior on the left."""
    _, sy, sz = (float(s) for s in spacing)
    grey = lung_window(hu[::-1, :, x])
    lab = _labels(infection[::-1, :, x], None if classes is None else classes[::-1, :, x])
    return _to_display(grey, lab, sz, sy, classes is not None, max_px, box)


def pick_slices(infection: np.ndarray, lung: np.ndarray | None = None, n: int = 12) -> tuple[list[int], set[int]]:
    """Axial slices for a montage: up to ``n // 2`` slices with most infection plus evenly spaced ones.

    The infected picks are taken by decreasing infection area, each at least the lung's z extent / ``n`` slices
    away from those already taken, so they show different lesions rather than one lesion on neighbouring slices.
    Evenly spaced slices fill the rest and cover the lung's z extent (the whole volume without lung). Returns the
    slices from superior to inferior and the set of those picked for their infection.
    """
    nz = infection.shape[0]
    n = max(1, min(int(n), nz))
    area = np.count_nonzero(np.asarray(infection).reshape(nz, -1), axis=1)
    if lung is not None and np.any(lung):
        held = np.nonzero(np.asarray(lung).reshape(nz, -1).any(axis=1))[0]
        lo, hi = int(held[0]), int(held[-1])
    else:
        lo, hi = 0, nz - 1
    gap = max(1, (hi - lo + 1) // n)
    infected = np.nonzero(area)[0]
    top = spaced_top(infected, area[infected], n // 2, gap)
    chosen = set(top)
    free = [z for z in range(lo, hi + 1) if z not in chosen] or [z for z in range(nz) if z not in chosen]
    for target in np.linspace(lo, hi, n - len(top)) if n > len(top) else []:
        if not free:
            break
        z = min(free, key=lambda f: (abs(f - target), f))  # nearest slice not yet taken
        chosen.add(z)
        free.remove(z)
    return sorted(chosen, reverse=True), set(top)


def agg_figure(figsize: tuple[float, float]) -> Figure:
    """A matplotlib figure drawn by Agg, outside pyplot: no global figure registry and no backend switch for whoever
    imports covseg, so pictures can be drawn in several threads at once."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _png_bytes(fig: Figure, dpi: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="black")
    return buf.getvalue()


def _bare(ax: Axes) -> None:
    """No axis lines, ticks or tick labels. The ticks are removed, not only hidden: ``tight_layout`` and the title
    placement otherwise compute every hidden tick's text extent (about half of the montage's drawing time)."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.axis("off")


def _letters(ax: Axes, top: str, bottom: str, left: str, right: str) -> None:
    """Orientation letters at the panel's edges, outlined in black: without the outline the light blue letters
    vanished on the white soft tissue of the chest wall (R and L lie on it in most axial slices). They lie inside
    the panel, so ``tight_layout`` leaves them out (measuring them cost more than drawing their outlines)."""
    style = {"color": "#7fd4ff", "fontsize": 8, "fontweight": "bold", "transform": ax.transAxes, "in_layout": False,
             "path_effects": [patheffects.withStroke(linewidth=2, foreground="black")]}
    ax.text(0.5, 0.98, top, ha="center", va="top", **style)
    ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **style)
    ax.text(0.02, 0.5, left, ha="left", va="center", **style)
    ax.text(0.98, 0.5, right, ha="right", va="center", **style)


def _scale_bar(ax: Axes, panel: np.ndarray, mm_per_px: float) -> None:
    """A scale bar in the panel's bottom right corner (:func:`scale_bar_mm` long), in the letters' colour outlined
    in black, its length written above it: without one a 64-pixel scan and a 512-pixel scan looked the same size."""
    h, w = panel.shape[:2]
    mm = scale_bar_mm(w * mm_per_px)
    length = mm / mm_per_px
    x1, y = w - 0.5 - 0.03 * w, h - 0.5 - 0.05 * h
    outline = [patheffects.withStroke(linewidth=3, foreground="black")]
    ax.plot([x1 - length, x1], [y, y], color="#7fd4ff", lw=1.5, solid_capstyle="butt", path_effects=outline)
    ax.text(x1 - length / 2, y - 0.02 * h, _bar_text(mm), color="#7fd4ff", fontsize=7, ha="center", va="bottom",
            in_layout=False, path_effects=[patheffects.withStroke(linewidth=2, foreground="black")])
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)


def _axes_box(fig: Figure, ax: Axes, dpi: int) -> Box:
    """The whole pixels ``ax`` covers in a PNG written at ``dpi``: a panel no larger is shown at 1:1 or enlarged.
    Shrunk by matplotlib's nearest-neighbour resampling instead, it loses whole rows and columns, and with them
    pieces of the 1-pixel contours (the montage drew a 512-pixel slice at 256 pixels on 224: outlines in dashes)."""
    width, height = fig.get_size_inches()
    pos = ax.get_position()
    return max(1, int(pos.height * height * dpi)), max(1, int(pos.width * width * dpi))


def labels_found(infection: np.ndarray, classes: np.ndarray | None) -> set[int]:
    """The labels the volume holds: {1} or {} for a binary mask, a subset of {1, 2} for a class map (checked slice
    by slice, stopping at the first hit: no full-volume copy while the report computes)."""
    if classes is None:
        return {1} if any(np.any(plane) for plane in infection) else set()
    return {k for k in CLASS_COLOURS if any(np.any(plane == k) for plane in classes)}


def _legend(fig: Figure, multi: bool, found: set[int] | None = None) -> list[Text]:
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


HEADING_PT = 9
"""Font size of the pictures' headings (points)."""


def _wrap_inches(text: str, width: float, points: float) -> list[str]:
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


def montage_png(hu: np.ndarray, infection: np.ndarray, spacing: Sequence[float], *, lung: np.ndarray | None = None,
                classes: np.ndarray | None = None, n: int = 12, title: str = "", cols: int = 4,
                dpi: int = 100) -> bytes:
    """PNG bytes of an axial montage (see :func:`pick_slices`) with contours, orientation letters and areas."""
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
    heading = [part for line in heading for part in _wrap_inches(line, width - 2 * pad, HEADING_PT)]
    head, panel_h = 0.12 + 0.17 * len(heading), panel_w * aspect
    height = head + rows * (caption + panel_h) + (rows - 1) * pad + foot
    fig = agg_figure((width, height))
    fig.subplots_adjust(left=pad / width, right=1 - pad / width, top=1 - (head + caption) / height,
                        bottom=foot / height, wspace=2 * pad / panel_w, hspace=(caption + pad) / panel_h)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        _bare(ax)
    box = _axes_box(fig, axes[0, 0], dpi)
    for ax, z in zip(axes.ravel(), zs):
        panel = axial_panel(hu, infection, spacing, z, classes, box=box)
        ax.imshow(panel, interpolation="nearest")
        _scale_bar(ax, panel, np.shape(hu)[2] * float(spacing[0]) / panel.shape[1])
        cm2 = np.count_nonzero(np.asarray(infection[z]) > 0) * px_mm2 / 100.0
        mark = " *" if z in top else ""
        ax.set_title(f"z={z}{mark}  {cm2:.1f} cm\u00b2", color="white", fontsize=8)
        _letters(ax, "A", "P", "R", "L")
    fig.suptitle("\n".join(heading), color="white", fontsize=HEADING_PT, y=1 - 0.06 / height, va="top")
    _legend(fig, classes is not None, labels_found(infection, classes))
    return _png_bytes(fig, dpi)


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
    for ax, img, name, letters, across in (
            (axes[0], cor, f"coronal y={y} of 0-{ny - 1} (0 = most anterior)", ("S", "I", "R", "L"), width_mm[0]),
            (axes[1], sag, f"sagittal x={x} of 0-{nx - 1} (0 = patient's right)", ("S", "I", "A", "P"), width_mm[1])):
        ax.imshow(img, interpolation="nearest")
        _scale_bar(ax, img, across / img.shape[1])
        _bare(ax)
        ax.set_title(name, color="white", fontsize=9)
        _letters(ax, *letters)
    fig.suptitle(f"{title}  reformats, {WINDOW_TEXT}".strip(), color="white", fontsize=9, y=1 - 0.08 / height,
                 va="top")
    _legend(fig, classes is not None, labels_found(infection, classes))
    return _png_bytes(fig, dpi)


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, contour: np.ndarray | None = None, *, alpha: float = 0.45,
                    cmap: str = "jet", window: tuple[float, float] | None = None,
                    contour_colour: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """uint8 RGB of ``heat`` (an activation map, any range, normalised to [0, 1]) blended over ``image``.

    ``image``: a 2D slice, in [0, 1] unless ``window`` (level, width in HU) is given; ``heat`` is resized to
    ``image``'s shape when it differs (bilinear); where ``heat`` is NaN (a region the map does not cover) the
    slice is shown without colour; ``contour``: an optional mask whose inner boundary is drawn.
    """
    image = np.asarray(image, np.float32)
    base = lung_window(image, *window) if window is not None else np.clip(image, 0.0, 1.0)
    h = np.asarray(heat, np.float32)
    if h.shape != image.shape:
        h = resize(h, image.shape, order=1, preserve_range=True, anti_aliasing=False)
    covered = np.isfinite(h)
    h = np.where(covered, h - (float(h[covered].min()) if covered.any() else 0.0), 0.0)
    peak = float(h.max())
    h = h / peak if peak > 0 else h
    colour = matplotlib.colormaps[cmap](h)[..., :3].astype(np.float32)
    weight = np.where(covered, alpha, 0.0)[..., None]
    rgb = (1.0 - weight) * base[..., None] + weight * colour
    out = (np.clip(rgb, 0.0, 1.0) * 255).round().astype(np.uint8)
    if contour is not None:
        edge = inner_edge(np.asarray(contour) > 0)
        out[edge] = contour_colour
    return out


def activation_beside_mask(image: np.ndarray, heat: np.ndarray, mask: np.ndarray | None = None, *,
                           window: tuple[float, float] | None = None, gap: int = 4) -> np.ndarray:
    """uint8 RGB: the slice with ``mask``'s contour (infection red) on the left, :func:`heatmap_overlay` of
    ``heat`` with the same contour (white) on the right, ``gap`` black columns between (for ``covseg diagnose``)."""
    left = heatmap_overlay(image, np.zeros(np.shape(image), np.float32), mask, alpha=0.0, window=window,
                           contour_colour=INFECTION_COLOUR)
    right = heatmap_overlay(image, heat, mask, window=window)
    return np.concatenate([left, np.zeros((left.shape[0], gap, 3), np.uint8), right], axis=1)


def _save_png(data: bytes | np.ndarray, path: Path) -> Path:
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            Image.fromarray(data).save(tmp, format="PNG")
    return path


OVERLAY_MIN_PX = 256
"""A per-slice overlay smaller than this (a 64-pixel scan: 128 pixels) is enlarged by whole pixels to at least it."""
OVERLAY_LINE = 17
"""Height of one line of a per-slice overlay's caption (pixels)."""


def _flow(draw: ImageDraw.ImageDraw, parts: Sequence[tuple[str, tuple[int, int, int]]], width: int,
          font) -> list[list[tuple[int, str, tuple[int, int, int]]]]:
    """``(text, colour)`` parts laid out left to right in lines no wider than ``width``: ``[[(x, text, colour)]]``.
    A part that does not fit on the line is started on the next one, and one wider than ``width`` (a narrow panel
    of a coarse scan) is broken between its words."""
    lines: list[list[tuple[int, str, tuple[int, int, int]]]] = [[]]
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
    lines = _flow(measure, parts, w, font)
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
    return [_save_png(slice_overlay(hu, infection, spacing, int(z), classes=classes, name=name),
                      folder / f"slice_{z:04d}.png") for z in zs]


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
            _save_png(drawn[file_name], out_dir / file_name)
            files[key] = file_name
    if overlays != "none":
        write_slice_overlays(out_dir / "overlays", hu, infection, spacing, classes=classes, which=overlays, name=name)
        files["overlays"] = "overlays"
    return files
