"""The shipped classifier's activation map (Eq. 1-2) responds to a lesion inserted into a real slice.

Real non-COVID slices of the sars-cov-2-ct test split get a synthetic ground-glass lesion (a soft disk of hazy
grey with texture) placed inside the lung. Criterion, fixed before looking at any result: over all cases, the
share of the map's mass inside the lesion disk rises at least 1.5-fold from the slice without the lesion to the
slice with it, and with the lesion it is at least twice the disk's share of the image area. At 160² the map of
the last stage is 5x5, yet a map on the lesion still gives the disk about 0.3 of its mass (on these cases 0.34 for
all of it on the cell under the lesion, 0.27 for the disk averaged onto the grid), so twice the area share (about
0.06) is within reach of that resolution.
The share inside the disk grown by half its radius and the distance from the map's centre of mass to the
lesion's centre (as a fraction of the image diagonal) are printed beside it.

jcs_classifier 0.1.0 and 0.2.0 failed it (0.031 and 0.035 inside the disk for an area share of 0.032; a strict
xfail tied to their files then); 0.3.0 passed it: 0.013 -> 0.065 for 0.032, 2.02 times the area share (the same
to five digits with oneDNN capped at AVX2); 0.4.0 passes it: 0.011 -> 0.098, about 3 times.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from skimage.filters import threshold_otsu

from covseg.engines.inference.activation import slice_activation
from covseg.io.classification import labelled_slices
from covseg.io.slices import read_grey
from covseg.networks.classifier import SliceClassifier
from covseg.networks.loading import load_weights

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "bundles" / "jcs_classifier" / "models" / "model.pt"
IMAGE_SIZE = 160
N_SLICES = 6


def insert_lesion(grey: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    """A ground-glass disk placed where a disk of radius ~12 % of the width fits inside the lung (the dark regions
    below Otsu's threshold that do not touch the border); None if there is no room."""
    radius = int(0.12 * min(grey.shape))
    smooth = ndimage.gaussian_filter(grey, 2)
    dark, _ = ndimage.label(smooth < threshold_otsu(smooth))
    outside = np.unique(np.concatenate([dark[0], dark[-1], dark[:, 0], dark[:, -1]]))
    lung = ndimage.binary_opening((dark > 0) & ~np.isin(dark, outside), iterations=2)  # dark, not air outside
    room = ndimage.distance_transform_edt(lung)
    ys, xs = np.nonzero(room >= radius * 0.8)
    if ys.size == 0:
        return None
    k = rng.integers(ys.size)
    yy, xx = np.mgrid[:grey.shape[0], :grey.shape[1]]
    dist = np.hypot(yy - ys[k], xx - xs[k])
    disk = dist <= radius
    weight = np.clip((radius - dist) / (0.3 * radius), 0, 1)  # soft edge
    texture = ndimage.gaussian_filter(rng.normal(0, 1, grey.shape), 2)
    haze = np.clip(0.5 + 0.08 * texture / (texture.std() + 1e-6), 0, 1)
    return np.clip(grey + weight * (haze - grey) * 0.85, 0, 1).astype(np.float32), disk


@pytest.mark.slow
def test_activation_mass_moves_onto_an_inserted_lesion(cls_dir, one_torch_thread):
    if not WEIGHTS.exists():
        pytest.skip(f"{WEIGHTS}: no shipped classifier weights")
    net = load_weights(SliceClassifier(), WEIGHTS)
    items = [i for i in labelled_slices(cls_dir, "sars-cov-2-ct", "test") if i["label"] == 0]
    rng = np.random.default_rng(0)
    before, after, area, near, centre, prob = [], [], [], [], [], []
    for item in items[::max(1, len(items) // (3 * N_SLICES))]:
        grey = read_grey(Path(item["image"]))
        placed = insert_lesion(grey, rng)
        if placed is None:
            continue
        lesioned, disk = placed
        margin = ndimage.binary_dilation(disk, iterations=int(np.sqrt(disk.sum() / np.pi) / 2))
        am0, p0 = slice_activation(net, grey, IMAGE_SIZE)
        am1, p1 = slice_activation(net, lesioned, IMAGE_SIZE)
        before.append(_share(am0, disk))
        after.append(_share(am1, disk))
        area.append(float(disk.mean()))
        near.append((_share(am0, margin), _share(am1, margin), float(margin.mean())))
        centre.append((_centre_distance(am0, disk), _centre_distance(am1, disk)))
        prob.append((p0, p1))
        if len(after) == N_SLICES:
            break
    assert len(after) == N_SLICES, "not enough slices with room for a lesion"
    b, a, s = np.mean(before), np.mean(after), np.mean(area)
    (n0, n1, ns), (c0, c1), (p0, p1) = np.mean(near, 0), np.mean(centre, 0), np.mean(prob, 0)
    print(f"P(COVID-19) {p0:.3f} -> {p1:.3f}; mass inside lesion: before {b:.3f}, after {a:.3f}, area share {s:.3f}; "
          f"within half a radius {n0:.3f} -> {n1:.3f} (area {ns:.3f}); centre of mass {c0:.3f} -> {c1:.3f}")
    assert a >= 1.5 * b, f"activation mass inside the lesion rose only from {b:.3f} to {a:.3f}"
    assert a >= 2.0 * s, f"activation mass inside the lesion {a:.3f} is not twice its area share {s:.3f}"


def _share(am: np.ndarray, region: np.ndarray) -> float:
    """Share of the map's mass inside ``region``."""
    return float(am[region].sum() / max(am.sum(), 1e-12))


def _centre_distance(am: np.ndarray, disk: np.ndarray) -> float:
    """Distance from the map's centre of mass to the disk's centre, as a fraction of the image diagonal."""
    yy, xx = np.mgrid[:am.shape[0], :am.shape[1]]
    total = max(am.sum(), 1e-12)
    gap = np.hypot((am * yy).sum() / total - yy[disk].mean(), (am * xx).sum() / total - xx[disk].mean())
    return float(gap / np.hypot(*am.shape))
