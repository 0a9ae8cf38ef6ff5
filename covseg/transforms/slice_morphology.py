"""Morphology of ``[z, y, x]`` masks slice by slice (each axial slice on its own), as the lung mask needs it.

Border-connected regions, hole filling (optionally size-limited), exact disk closings, holes open in 3D, bounding
boxes and the largest 3D component. ``SLICE4`` / ``SLICE8``: 4- and 8-connected in-plane structuring elements.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from scipy import ndimage as ndi

__all__ = ["SLICE4", "SLICE8", "border_connected_2d", "closing_2d", "crop_box", "disk_kernel", "fill_holes_2d",
           "largest_component", "open_holes"]

SLICE4 = np.zeros((3, 3, 3), bool)
SLICE4[1] = ndi.generate_binary_structure(2, 1)
SLICE8 = np.zeros((3, 3, 3), bool)
SLICE8[1] = True


def _occupied_slices(mask: np.ndarray) -> np.ndarray:
    """Indices of the axial slices of ``mask`` that hold any voxel."""
    return np.nonzero(mask.reshape(mask.shape[0], -1).any(axis=1))[0]


def border_connected_2d(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` connected, within their axial slice, to the slice's border."""
    lab, n = ndi.label(mask, structure=SLICE8)
    if n == 0:
        return np.zeros_like(mask)
    border = np.zeros(n + 1, bool)
    for edge in (lab[:, 0, :], lab[:, -1, :], lab[:, :, 0], lab[:, :, -1]):
        border[np.unique(edge)] = True
    border[0] = False
    return border[lab]


def fill_holes_2d(mask: np.ndarray, max_ratio: float | None = None, min_px: int = 0) -> np.ndarray:
    """Fill the holes of every axial slice (8-connected background not reaching the slice's border).

    With ``max_ratio``, a hole larger than ``min_px`` is filled only if its area is at most ``max_ratio``
    times the mask's area in that slice: vessels and lesions inside a lung are filled, the liver dome
    inside a ring of lung base is not. Each slice's background is labelled by OpenCV.
    """
    if not mask.any():
        return mask
    out = mask.copy()
    height, width = mask.shape[1:]
    for z in _occupied_slices(mask):
        background = np.ascontiguousarray(~mask[z]).view(np.uint8)
        _, lab, stats, _ = cv2.connectedComponentsWithStats(background, connectivity=8, ltype=cv2.CV_32S)
        x, y, w, h, area = (stats[:, i] for i in range(5))
        hole = (x > 0) & (y > 0) & (x + w < width) & (y + h < height)
        hole[0] = False  # label 0 is the slice's mask itself
        if max_ratio is not None:
            hole &= area <= max(max_ratio * float(np.count_nonzero(mask[z])), min_px)
        if hole.any():
            out[z] |= hole[lab]
    return out


def crop_box(mask: np.ndarray, pad: Sequence[int]) -> tuple[slice, ...]:
    """Bounding box of ``mask`` grown by ``pad`` per axis (clipped to the array)."""
    idx = np.nonzero(mask)
    return tuple(slice(max(int(i.min()) - p, 0), min(int(i.max()) + p + 1, n)) for i, p, n in zip(idx, pad, mask.shape))


def disk_kernel(radius_mm: float, spacing_yx: tuple[float, float]) -> np.ndarray:
    """``uint8`` structuring element of the offsets within ``radius_mm`` of the centre (spacing-aware, exact).

    An offset is in the disk when its Euclidean length in mm, computed as ``scipy.ndimage.distance_transform_edt``
    computes it, is at most ``radius_mm``; so a dilation with this kernel equals ``edt(~mask) <= radius_mm``.
    """
    sy, sx = (float(s) for s in spacing_yx)
    ry, rx = int(radius_mm // sy), int(radius_mm // sx)
    dy, dx = np.mgrid[-ry : ry + 1, -rx : rx + 1].astype(np.float64)
    return (np.sqrt((dy * sy) ** 2 + (dx * sx) ** 2) <= radius_mm).astype(np.uint8)


def closing_2d(mask: np.ndarray, radius_mm: float, spacing_yx: tuple[float, float]) -> np.ndarray:
    """Per-slice closing with a disk of ``radius_mm`` (exact: the disk of :func:`disk_kernel`).

    ``mask`` must have at least ``radius`` + 1 pixels of background around it in every slice. Each slice is
    dilated and eroded with OpenCV (outside the slice counts as background for the dilation and as foreground for
    the erosion, as with distance transforms), which is several times faster than two distance transforms.
    """
    if radius_mm <= 0 or not mask.any():
        return mask
    kernel = disk_kernel(radius_mm, spacing_yx)
    out = np.zeros(mask.shape, bool)
    for z in _occupied_slices(mask):
        grown = cv2.dilate(np.ascontiguousarray(mask[z]).view(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT,
                           borderValue=0)
        out[z] = cv2.erode(grown, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=1).view(bool)
    return out


def open_holes(mask: np.ndarray, min_px: int) -> np.ndarray:
    """Per-slice holes of ``mask`` larger than ``min_px`` that are not enclosed in 3D.

    A hole is open when the non-mask voxels it belongs to (3D connectivity) reach the border of the
    array, e.g. the liver dome seen as an island inside a ring of lung base; a lesion inside the lung
    is enclosed. The array must have background at its in-plane border.
    """
    holes = fill_holes_2d(mask) & ~mask
    if not holes.any():
        return holes
    lab, n = ndi.label(holes, structure=SLICE8)
    big = np.bincount(lab.ravel(), minlength=n + 1) > min_px
    big[0] = False
    if not big.any():
        return np.zeros_like(mask)
    rest, _ = ndi.label(np.pad(~mask, 1, constant_values=True))
    open3d = (rest == rest[0, 0, 0])[1:-1, 1:-1, 1:-1]
    reject = np.zeros(n + 1, bool)
    reject[np.unique(lab[open3d & big[lab]])] = True
    reject[0] = False
    return reject[lab]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of ``mask`` (2D or 3D; the body, without the table and loose objects)."""
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))
