"""Activation maps blended over a slice, with the infection contour (:func:`heatmap_overlay`), and the slice with
the contour beside it (:func:`activation_beside_mask`, for ``covseg diagnose``)."""

from __future__ import annotations

import matplotlib
import numpy as np
from skimage.transform import resize

from covseg.reports.pictures.contours import INFECTION_COLOUR, Colour, draw_contours
from covseg.reports.pictures.window import lung_window

__all__ = ["activation_beside_mask", "heatmap_overlay"]


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, contour: np.ndarray | None = None, *, alpha: float = 0.45,
                    cmap: str = "jet", window: tuple[float, float] | None = None,
                    contour_colour: Colour = (255, 255, 255)) -> np.ndarray:
    """uint8 RGB of ``heat`` (an activation map, any range, normalised to [0, 1]) blended over ``image``.

    ``image``: a 2D slice, in [0, 1] unless ``window`` (level, width in HU) is given; ``heat`` is resized to
    ``image``'s shape when it differs (bilinear); where ``heat`` is NaN (a region the map does not cover) the
    slice is shown without colour; ``contour``: an optional mask whose inner boundary is drawn, cased
    (:func:`~covseg.reports.pictures.contours.draw_contours`).
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
        draw_contours(out, (np.asarray(contour) > 0).astype(np.uint8), {1: contour_colour})
    return out


def activation_beside_mask(image: np.ndarray, heat: np.ndarray, mask: np.ndarray | None = None, *,
                           window: tuple[float, float] | None = None, gap: int = 4) -> np.ndarray:
    """uint8 RGB: the slice with ``mask``'s contour (infection red) on the left, :func:`heatmap_overlay` of
    ``heat`` with the same contour (white) on the right, ``gap`` black columns between (for ``covseg diagnose``)."""
    left = heatmap_overlay(image, np.zeros(np.shape(image), np.float32), mask, alpha=0.0, window=window,
                           contour_colour=INFECTION_COLOUR)
    right = heatmap_overlay(image, heat, mask, window=window)
    return np.concatenate([left, np.zeros((left.shape[0], gap, 3), np.uint8), right], axis=1)
