"""lung_mask on the real CT volumes in shared/data/ct-volumes (skipped when absent).

Volumes are read with SimpleITK and re-oriented to LPS, like ``covseg.io.read.read_volume``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from utils import dice

from covseg.transforms.lung import LEFT_LUNG, RIGHT_LUNG, lung_mask

pytestmark = pytest.mark.data


def read_lps(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """HU float32 [z, y, x] re-oriented to LPS, and its (x, y, z) spacing."""
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        img = reader.Execute()
    else:
        img = sitk.ReadImage(str(path))
    img = sitk.DICOMOrient(img, "LPS")
    return sitk.GetArrayFromImage(img).astype(np.float32), tuple(float(s) for s in img.GetSpacing())


@pytest.fixture(scope="module")
def cip64_truth(ct_volumes_dir: Path) -> np.ndarray:
    return read_lps(ct_volumes_dir / "chest-cip64" / "lung_mask_R1_L2.nii.gz")[0].astype(np.uint8)


@pytest.mark.parametrize("source", ["ct.nii.gz", "dicom"])
def test_cip64_dice_and_sides(ct_volumes_dir: Path, cip64_truth: np.ndarray, source: str) -> None:
    hu, spacing = read_lps(ct_volumes_dir / "chest-cip64" / source)
    m = lung_mask(hu, spacing)
    assert m.shape == cip64_truth.shape
    # measured: 0.975 (right 0.975, left 0.976) for both the NIfTI and the DICOM series
    assert dice(m > 0, cip64_truth > 0) >= 0.96
    assert dice(m == RIGHT_LUNG, cip64_truth == 1) >= 0.95
    assert dice(m == LEFT_LUNG, cip64_truth == 2) >= 0.95
    assert dice(m == RIGHT_LUNG, cip64_truth == 2) < 0.05  # not swapped


def test_cip64_trachea_is_mostly_not_lung(ct_volumes_dir: Path) -> None:
    hu, spacing = read_lps(ct_volumes_dir / "chest-cip64" / "ct.nii.gz")
    raw = read_lps(ct_volumes_dir / "chest-cip64" / "cip_labelmap_raw.nii.gz")[0].astype(np.int32)
    m = lung_mask(hu, spacing)
    airway = raw == (2 << 8)  # CIP type AIRWAY, region undefined: trachea and main bronchi
    assert airway.sum() > 400
    top = np.nonzero(airway.any(axis=(1, 2)))[0].max()
    upper = airway.copy()
    upper[: top - 12] = False  # the 4 mm trachea above its merge with the lungs (measured: 0 voxels kept)
    assert (m[upper] > 0).mean() < 0.05
    assert (m[airway] > 0).mean() < 0.6  # measured 0.49: the rest merges in-plane with the lungs at 4 mm


@pytest.mark.parametrize("source", ["ct.nii.gz", "dicom"])
def test_chest_2slice_counts_match_lungmask(ct_volumes_dir: Path, source: str) -> None:
    folder = ct_volumes_dir / "chest-2slice"
    counts = json.loads((folder / "expected_lungmask_counts.json").read_text())
    expected = counts["expected_unique_counts_[bg,label1,label2]"]
    hu, spacing = read_lps(folder / source)
    assert hu.min() == -2048  # outside the field of view
    m = lung_mask(hu, spacing)
    right, left = int((m == RIGHT_LUNG).sum()), int((m == LEFT_LUNG).sum())
    # measured: 63330 / 35606, i.e. -2.2 % / -2.5 % of lungmask R231's 64752 / 36536
    assert abs(right / expected[1] - 1) <= 0.05
    assert abs(left / expected[2] - 1) <= 0.05


def test_abdomen_lung_bases_are_small_and_sensible(ct_volumes_dir: Path) -> None:
    folder = ct_volumes_dir / "abdomen-totalseg"
    hu, spacing = read_lps(folder / "example_ct_sm.nii.gz")
    seg = read_lps(folder / "example_seg.nii.gz")[0].astype(np.int32)
    m = lung_mask(hu, spacing)
    ml = float(np.prod(spacing)) / 1000.0
    lungs = np.isin(seg, [10, 11, 12, 13, 14])  # TotalSegmentator lung lobes
    right_ts, left_ts = np.isin(seg, [12, 13, 14]), np.isin(seg, [10, 11])
    # measured: 76.8 / 46.0 mL vs TotalSegmentator 73.9 / 42.4 mL, Dice 0.958; stomach / colon gas left out
    assert (m > 0).sum() * ml < 200
    assert dice(m > 0, lungs) > 0.9
    assert dice(m == RIGHT_LUNG, right_ts) > 0.9 and dice(m == LEFT_LUNG, left_ts) > 0.85
    stomach_colon = np.isin(seg, [6, 20])
    assert (m[stomach_colon] > 0).sum() < 0.01 * stomach_colon.sum()

    full, spacing_full = read_lps(folder / "example_ct.nii.gz")  # the same bases over the whole abdomen
    mf = lung_mask(full, spacing_full)
    assert abs(int((mf > 0).sum()) - int((m > 0).sum())) < 0.05 * (m > 0).sum()


def test_abdomen_dicom_without_lungs(ct_volumes_dir: Path) -> None:
    hu, spacing = read_lps(ct_volumes_dir / "abdomen-totalseg" / "example_ct_dicom")
    m = lung_mask(hu, spacing)
    assert m.shape == hu.shape
    # measured: 0.8 mL at first (a sliver of right costophrenic recess), 0 mL on 2026-12-07; the stomach gas is not lung
    assert (m > 0).sum() * float(np.prod(spacing)) / 1000.0 < 5.0


def test_with_covseg_io_reader(ct_volumes_dir: Path, cip64_truth: np.ndarray) -> None:
    from covseg.io import read
    vol = read.read_volume(ct_volumes_dir / "chest-cip64" / "ct.nii.gz")
    m = lung_mask(vol.array, vol.spacing)
    assert dice(m > 0, cip64_truth > 0) >= 0.96 and dice(m == RIGHT_LUNG, cip64_truth == 1) >= 0.95
