"""Contours: the colours and names of the labels, the label map of a slice and the pixels its outlines cover.

Contours are the inner boundary pixels of each mask: infection red for a binary model; for a 0/1/2 label map
ground-glass opacity (1) yellow and consolidation (2) magenta. Each is cased: a 1-pixel black line along its
outside (:data:`CASING`), so that the outline stands out by luminance, not by hue alone. Red on the grey lung
window has too little luminance contrast for red-blind (protan) readers (1.3-1.4:1 to the lung beside it under
simulated protanopia); against its black casing every contour colour has at least 3.66:1 (the red, protan) for
normal, protan and deutan vision, above WCAG 2.1's 3:1 for graphical objects (docs/benchmarks.md). The casing lies
outside the lesion, so the lesion's own pixels are covered no more than before, and black reads as a drawn edge
where white would look like dense tissue.

Where two classes meet, yellow beside magenta had only 2.0-2.5:1 under simulation; a casing runs between them too
(:func:`casing`: on the ground glass's side, on the consolidation's where the ground glass is a 1-pixel sliver), so
that each line meets black there: at least 5.50:1 (magenta, protan). A 1-pixel sliver of both keeps its two colours.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["CASING", "CLASS_COLOURS", "CLASS_NAMES", "INFECTION_COLOUR", "Colour", "casing", "draw_contours",
           "inner_edge", "label_colours", "label_map", "labels_found", "outer_edge"]

Colour = tuple[int, int, int]
INFECTION_COLOUR: Colour = (255, 40, 40)
CLASS_COLOURS: dict[int, Colour] = {1: (255, 215, 0), 2: (255, 0, 255)}
CLASS_NAMES = {1: "ground-glass opacity", 2: "consolidation"}
CASING: Colour = (0, 0, 0)
"""The dark edge drawn beside every contour, outside its mask (between two classes: :func:`casing`)."""


def label_map(infection: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
    """One uint8 label map: the class map when given (0/1/2), else the infection mask as 0/1."""
    if classes is not None:
        return np.asarray(classes, np.uint8)
    return (np.asarray(infection) > 0).astype(np.uint8)


def label_colours(multi: bool) -> dict[int, Colour]:
    """Label -> contour colour: the classes' colours for a class map (``multi``), else infection red."""
    return CLASS_COLOURS if multi else {1: INFECTION_COLOUR}


def inner_edge(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` with a 4-neighbour outside it (the image border counts as inside): skimage's
    ``find_boundaries(mask, mode="inner")``, without importing ``skimage.segmentation`` (0.25 s, scipy.sparse and
    scipy.optimize with it) in the pictures' thread."""
    return mask & ~ndimage.binary_erosion(mask, border_value=1)


def outer_edge(mask: np.ndarray) -> np.ndarray:
    """The pixels outside ``mask`` with a 4-neighbour inside it."""
    return ndimage.binary_dilation(mask) & ~mask


def _with_room(pixels: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Those of ``pixels`` with a 4-neighbour in ``region`` that is not one of ``pixels``: casing them leaves their
    region's colour a pixel to lie on behind."""
    return pixels & ndimage.binary_dilation(region & ~pixels)


def casing(labels: np.ndarray, colours: dict[int, Colour]) -> np.ndarray:
    """The pixels :func:`draw_contours` paints :data:`CASING`: those just outside the labels of ``colours``, and a
    line between two classes, so that their two colours never touch where there is room for three. It lies on the
    lower class's pixels beside the higher (ground glass beside consolidation); where the lower class is a 1-pixel
    sliver there, on the higher class's pixels beside it; where both are, nowhere (each keeps its colour)."""
    labelled = np.isin(labels, list(colours))
    out = outer_edge(labelled)
    for value in colours:
        higher = np.isin(labels, [k for k in colours if k > value])
        if not higher.any():
            continue
        lower = labels == value
        beside = lower & ndimage.binary_dilation(higher)
        lower_cased = _with_room(beside, lower)
        sliver_side = higher & ndimage.binary_dilation(beside & ~lower_cased)
        out |= lower_cased | _with_room(sliver_side, higher)
    return out


def draw_contours(rgb: np.ndarray, labels: np.ndarray, colours: dict[int, Colour], thick: bool = False) -> None:
    """Draw, in place on ``rgb``, the :func:`casing` and, inside it, the inner edge of each label of ``labels`` in
    its colour (``thick``: 2 pixels wide, both inside the label): the edge of what the label holds beside its
    casing, so that where two classes meet a black line runs between their two colours."""
    cased = casing(labels, colours)
    rgb[cased] = CASING
    for value, colour in colours.items():
        mask = (labels == value) & ~cased
        if not mask.any():
            continue
        edge = inner_edge(mask)
        if thick:
            edge = ndimage.binary_dilation(edge) & mask
        rgb[edge] = colour


def labels_found(infection: np.ndarray, classes: np.ndarray | None) -> set[int]:
    """The labels the volume holds: {1} or {} for a binary mask, a subset of {1, 2} for a class map (checked slice
    by slice, stopping at the first hit: no full-volume copy while the report computes)."""
    if classes is None:
        return {1} if any(np.any(plane) for plane in infection) else set()
    return {k for k in CLASS_COLOURS if any(np.any(plane == k) for plane in classes)}
