"""Per-slice morphology of the lung mask: the OpenCV closing equals the exact distance-transform closing."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from covseg.transforms.slice_morphology import closing_2d, disk_kernel, fill_holes_2d


def edt_closing(mask: np.ndarray, radius_mm: float, spacing_yx: tuple[float, float]) -> np.ndarray:
    """The reference: closing by a disk through two Euclidean distance transforms, no reach across slices."""
    sampling = (1e6, float(spacing_yx[0]), float(spacing_yx[1]))
    dilated = ndi.distance_transform_edt(~mask, sampling=sampling) <= radius_mm
    return ndi.distance_transform_edt(dilated, sampling=sampling) > radius_mm


def blobby_stack(seed: int, shape: tuple[int, int, int], pad: int) -> np.ndarray:
    """Random smoothed blobs with ``pad`` background pixels around every slice, plus one empty slice."""
    rng = np.random.default_rng(seed)
    z, y, x = shape
    core = ndi.gaussian_filter(rng.random((z, y - 2 * pad, x - 2 * pad)), (0, 2, 2)) > 0.52
    mask = np.zeros(shape, bool)
    mask[:, pad:-pad, pad:-pad] = core
    mask[z // 2] = False
    return mask


@pytest.mark.parametrize(("radius_mm", "spacing_yx"), [(8.0, (1.4, 1.4)), (20.0, (1.4, 1.4)), (8.0, (0.7, 1.1)),
                                                      (5.0, (2.5, 2.5)), (3.0, (1.0, 1.0))])
def test_closing_equals_distance_transform_closing(radius_mm: float, spacing_yx: tuple[float, float]) -> None:
    pad = int(np.ceil(radius_mm / min(spacing_yx))) + 1
    mask = blobby_stack(int(radius_mm * 10), (5, 60 + 2 * pad, 70 + 2 * pad), pad)
    got = closing_2d(mask, radius_mm, spacing_yx)
    want = edt_closing(mask, radius_mm, spacing_yx)
    assert got.dtype == bool and got.shape == mask.shape
    assert np.array_equal(got, want)
    assert (got & ~mask).any()  # the closing did something on these blobs
    assert not got[mask.shape[0] // 2].any()  # an empty slice stays empty


def test_disk_kernel_is_the_spacing_aware_disk() -> None:
    k = disk_kernel(2.0, (1.0, 1.0))
    assert k.shape == (5, 5) and k[2, 2] == 1 and k[0, 2] == 1 and k[0, 0] == 0 and int(k.sum()) == 13
    wide = disk_kernel(2.0, (2.0, 1.0))  # coarse rows: the disk is 3 rows by 5 columns
    assert wide.shape == (3, 5) and wide[0, 2] == 1 and wide[0, 1] == 0


def test_closing_without_radius_or_mask_returns_the_input() -> None:
    mask = np.zeros((2, 8, 8), bool)
    assert closing_2d(mask, 3.0, (1.0, 1.0)) is mask
    mask[0, 3:5, 3:5] = True
    assert closing_2d(mask, 0.0, (1.0, 1.0)) is mask


def labelled_fill(mask: np.ndarray, max_ratio: float | None = None, min_px: int = 0) -> np.ndarray:
    """The reference: per-slice hole filling by labelling the whole stack's background with scipy."""
    lab, n = ndi.label(~mask, structure=np.pad(np.ones((1, 3, 3), bool), ((1, 1), (0, 0), (0, 0))))
    hole = np.ones(n + 1, bool)
    for edge in (lab[:, 0, :], lab[:, -1, :], lab[:, :, 0], lab[:, :, -1]):
        hole[np.unique(edge)] = False
    hole[0] = False
    if max_ratio is not None:
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        zs = np.array([sl[0].start if sl is not None else 0 for sl in ndi.find_objects(lab)], dtype=np.int64)
        area = mask.sum(axis=(1, 2))
        hole[1:] &= sizes[1:] <= np.maximum(max_ratio * area[zs], min_px)
    return mask | hole[lab]


@pytest.mark.parametrize(("max_ratio", "min_px"), [(None, 0), (0.05, 0), (0.01, 12), (0.2, 0)])
def test_fill_holes_equals_labelled_filling(max_ratio: float | None, min_px: int) -> None:
    rng = np.random.default_rng(7)
    mask = ndi.gaussian_filter(rng.random((6, 50, 64)), (0, 1.5, 1.5)) < 0.55  # a mask with holes of many sizes
    mask[2] = False
    mask[3, 10:40, 10:50] = True
    mask[3, 20:30, 20:25] = False  # one 50-pixel hole in an otherwise solid slice
    got = fill_holes_2d(mask, max_ratio, min_px)
    assert np.array_equal(got, labelled_fill(mask, max_ratio, min_px))
    assert (got & ~mask).any()
    assert not got[2].any()
