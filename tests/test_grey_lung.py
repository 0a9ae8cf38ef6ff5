"""The lung box found on grey slices of unknown window (``covseg.transforms.grey_lung``), on phantom slices whose
lung masks are known."""

from __future__ import annotations

import numpy as np
import pytest

from covseg.synthetic.phantom import make_chest_phantom
from covseg.transforms.crop import crop_to_box, lung_box
from covseg.transforms.grey_lung import grey_lung_box
from covseg.transforms.intensity import window_hu


@pytest.fixture(scope="module")
def chest_slice() -> tuple[np.ndarray, np.ndarray]:
    """A grey (lung window) axial phantom slice through both lungs, and its lung mask."""
    phantom = make_chest_phantom((9, 256, 256), spacing=(1.4, 1.4, 5.0), seed=3)
    z = 4
    return window_hu(phantom.hu[z].astype(np.float32)), phantom.lung_labels[z] > 0


def _iou(a: tuple, b: tuple) -> float:
    y0, y1 = max(a[0], b[0]), min(a[1], b[1])
    x0, x1 = max(a[2], b[2]), min(a[3], b[3])
    inter = max(y1 - y0, 0) * max(x1 - x0, 0)
    area = (a[1] - a[0]) * (a[3] - a[2]) + (b[1] - b[0]) * (b[3] - b[2])
    return inter / (area - inter)


def test_box_of_a_whole_thorax_slice_is_the_lungs_not_the_body(chest_slice):
    grey, lungs = chest_slice
    found = grey_lung_box(grey, margin_frac=0.0)
    assert found is not None
    assert _iou(found, lung_box(lungs, 0)) > 0.85


def test_a_tight_crop_keeps_its_lungs(chest_slice):
    """Lungs touching every edge (a slice already cropped to them): the crop keeps them (the box found, or the
    whole slice when none is found)."""
    from covseg.transforms.crop_transforms import CropToGreyLungBox

    grey, lungs = chest_slice
    box = lung_box(lungs, 0)
    tight, tight_lungs = crop_to_box(grey, box), crop_to_box(lungs, box)
    found = grey_lung_box(tight) or (0, tight.shape[0], 0, tight.shape[1])
    assert crop_to_box(tight_lungs, found).sum() >= 0.95 * tight_lungs.sum()
    assert CropToGreyLungBox()(tight[None]).shape[1:] == (found[1] - found[0], found[3] - found[2])


def test_a_slice_without_lungs_has_no_box():
    assert grey_lung_box(np.full((64, 64), 0.7, np.float32)) is None
    body = np.zeros((64, 64), np.float32)
    body[8:56, 8:56] = 0.8  # a body with nothing dark inside
    assert grey_lung_box(body) is None


def test_eval_transforms_crop_to_the_lungs_only_when_asked(chest_slice):
    from covseg.transforms.classification import classifier_eval_transforms

    grey, lungs = chest_slice
    item = {"image": grey[None]}
    whole = np.asarray(classifier_eval_transforms(64)(dict(item))["image"])
    cropped = np.asarray(classifier_eval_transforms(64, lung_crop=True)(dict(item))["image"])
    assert whole.shape == cropped.shape == (1, 64, 64)
    y0, y1, x0, x1 = grey_lung_box(grey)
    assert (y1 - y0) * (x1 - x0) < 0.8 * grey.size  # the crop dropped the body around the lungs
    assert float(np.abs(whole - cropped).mean()) > 0.01
    as_text = np.asarray(classifier_eval_transforms(64, lung_crop="false")(dict(item))["image"])  # a CLI override
    np.testing.assert_array_equal(as_text, whole)
