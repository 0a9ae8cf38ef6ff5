"""covseg.transforms against the COVID-SemiSeg slices (skipped when the dataset is absent).

Reproduces the evidence of docs/windowing.md: the window fitted to the labelled / test slices, the
edge maps' agreement, and the lung-box margins of the slices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from covseg.transforms.crop import DEFAULT_MARGIN_PX
from covseg.transforms.edges import edge_map
from covseg.transforms.intensity import SEMISEG_CORONACASES_WINDOW, SEMISEG_WINDOW, window_hu
from covseg.transforms.window_fit import TISSUE_HU, fit_landmarks, grey_landmarks

pytestmark = pytest.mark.data


def load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


def labelled_and_test(semiseg_dir: Path) -> list[Path]:
    return sorted((semiseg_dir / "train" / "labeled" / "images").glob("*.jpg")) + sorted(
        (semiseg_dir / "test" / "images").glob("*.jpg")
    )


def test_semiseg_window_matches_the_labelled_and_test_slices(semiseg_dir: Path) -> None:
    rows = [grey_landmarks(load(p)) for p in labelled_and_test(semiseg_dir)]
    assert len(rows) == 98
    est = fit_landmarks(rows)
    assert est is not None
    # measured: level -420, width 1350 from the medians of all 98 slices
    assert est[0] == pytest.approx(SEMISEG_WINDOW[0], abs=40)
    assert est[1] == pytest.approx(SEMISEG_WINDOW[1], rel=0.08)
    for name, hu in TISSUE_HU.items():
        measured = float(np.median([r[name] for r in rows if r[name] is not None]))
        assert 255 * float(window_hu(np.array(hu))) == pytest.approx(measured, abs=4), name
    # the parenchyma peak lands on a plausible lung density under the window
    lung = float(np.median([r["lung"] for r in rows]))
    lung_hu = SEMISEG_WINDOW[0] - SEMISEG_WINDOW[1] / 2 + lung / 255 * SEMISEG_WINDOW[1]
    assert -950 < lung_hu < -750


def test_coronacases_slices_use_a_wider_window(semiseg_dir: Path) -> None:
    files = sorted((semiseg_dir / "train" / "unlabeled" / "images").glob("Data-1_coronacases_org_00[14]_*.jpg"))[::4]
    assert len(files) > 20
    est = fit_landmarks([grey_landmarks(load(p)) for p in files])
    assert est is not None
    assert est[1] > 2000  # measured: width 2770 over all coronacases slices
    assert est[1] == pytest.approx(SEMISEG_CORONACASES_WINDOW[1], rel=0.1)


def test_edge_map_reproduces_the_dataset_edges(semiseg_dir: Path) -> None:
    scores = []
    for mask_path in sorted((semiseg_dir / "train" / "labeled" / "masks").glob("*.png")):
        truth = load(semiseg_dir / "train" / "labeled" / "edges" / mask_path.name) > 128
        ours = edge_map(load(mask_path)) > 0
        scores.append(2.0 * (ours & truth).sum() / (ours.sum() + truth.sum()))
    assert len(scores) == 50
    # measured: mean 0.9989, min 0.9960 (thickness 2 would give 0.67)
    assert np.mean(scores) >= 0.995 and np.min(scores) >= 0.99


def _margins(img: np.ndarray) -> list[int]:
    """Pixels between the image border and the dark (lung) region on each side."""
    hist = np.bincount(img.ravel(), minlength=256).astype(float)
    p = hist / hist.sum()
    omega, mu = np.cumsum(p), np.cumsum(p * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = int(np.nanargmax((mu[-1] * omega - mu) ** 2 / (omega * (1 - omega))))
    dark = ndi.binary_opening(img < t, iterations=2)
    lab, n = ndi.label(dark)
    sizes = np.bincount(lab.ravel())
    keep = np.isin(lab, np.flatnonzero(sizes > 0.01 * img.size)[1:] if n else [])
    ys, xs = np.nonzero(keep)
    h, w = img.shape
    return [int(ys.min()), int(h - 1 - ys.max()), int(xs.min()), int(w - 1 - xs.max())]


def test_slices_are_lung_boxes_with_a_small_margin(semiseg_dir: Path) -> None:
    tight = np.array([_margins(load(p)) for p in labelled_and_test(semiseg_dir)])
    unlabelled = sorted((semiseg_dir / "train" / "unlabeled" / "images").glob("*.jpg"))[::20]
    loose = np.array([_margins(load(p)) for p in unlabelled])
    # measured: labelled/test median 0 px (2/3 of the sides touch the lung), unlabelled median 8-9 px
    assert np.median(tight) <= 1 and (tight == 0).mean() > 0.5
    assert 4 <= np.median(loose) <= 14
    assert np.median(tight) <= DEFAULT_MARGIN_PX <= np.median(loose)


def test_rewindow_shows_a_wide_window_slice_as_the_labelled_slices_look():
    from covseg.transforms.intensity import rewindow, semiseg_window_of

    hu = np.linspace(-1050.0, 300.0, 57, dtype=np.float32)  # inside both windows (outside, the source clipped)
    stored = np.round(window_hu(hu, *SEMISEG_CORONACASES_WINDOW) * 255) / 255  # the 8-bit slice as shipped
    shown = rewindow(stored, semiseg_window_of("Data-1_coronacases_org_004_12.jpg"))
    np.testing.assert_allclose(shown, window_hu(hu), atol=SEMISEG_CORONACASES_WINDOW[1] / 255 / SEMISEG_WINDOW[1])
    assert not np.allclose(stored, window_hu(hu), atol=0.05)  # as stored they differ a lot
    assert semiseg_window_of("Data-1_radiopaedia_org_covid-19-pneumonia-7_85703_0-dcm_3.jpg") != SEMISEG_WINDOW
    assert semiseg_window_of("/x/train/labeled/images/12.jpg") == SEMISEG_WINDOW
    with pytest.raises(ValueError, match="width must be positive"):
        rewindow(stored, (0.0, 0.0))
