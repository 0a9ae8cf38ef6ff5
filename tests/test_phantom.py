"""covseg.synthetic.phantom: anatomy where it should be, masks consistent, writers readable."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy import ndimage

from covseg.io import find_volumes, read_volume
from covseg.synthetic.phantom import make_chest_phantom
from covseg.synthetic.phantom_dicom import write_dicom_missing_slice, write_mr_dicom, write_phantom_dicom
from covseg.synthetic.phantom_nifti import write_phantom


@pytest.fixture(scope="module")
def ph():
    return make_chest_phantom(shape=(60, 128, 128), spacing=(2.8, 2.8, 5.0), seed=0)


def test_shapes_types_and_masks(ph):
    assert ph.hu.shape == ph.lung_labels.shape == ph.infection.shape == ph.lesion_classes.shape == (60, 128, 128)
    assert ph.hu.dtype == np.int16 and ph.lung_labels.dtype == np.uint8
    assert set(np.unique(ph.lung_labels)) == {0, 1, 2}
    assert set(np.unique(ph.lesion_classes)) == {0, 1, 2}
    np.testing.assert_array_equal(ph.infection, ph.lesion_classes > 0)
    assert np.all(ph.lung_labels[ph.infection > 0] > 0), "lesions lie inside the lungs"


def test_anatomy_and_hu(ph):
    hu, lungs = ph.hu, ph.lung_labels
    # right lung (1) is on the image's left (small x) in LPS [z, y, x] arrays
    xs = {k: np.nonzero(lungs == k)[2].mean() for k in (1, 2)}
    assert xs[1] < 64 < xs[2]
    assert abs(np.median(hu[:, :3, :3]) + 1000) < 30  # air outside
    healthy = (lungs > 0) & (ph.infection == 0)
    assert -900 < np.median(hu[healthy]) < -800
    assert -550 < np.median(hu[ph.lesion_classes == 1]) < -300
    assert -60 < np.median(hu[ph.lesion_classes == 2]) < 60
    assert hu.max() > 400  # bone
    body = hu[30, 64, 5:123]
    assert np.any((body > -150) & (body < -50)), "subcutaneous fat"
    # each lung holds a few litres at this scale, both similar
    ml = [(lungs == k).sum() * np.prod(ph.spacing) / 1000 for k in (1, 2)]
    assert all(1000 < v < 4000 for v in ml) and 0.7 < ml[0] / ml[1] < 1.4


def test_trachea_is_air_inside_the_body(ph):
    z = int(0.8 * 59)
    air = ph.hu[z] < -500
    labels, _ = ndimage.label(air)
    outside = labels[0, 0]
    trachea = labels[int((0.15 + 1) / 2 * 128), 64]
    assert trachea not in (0, outside), "trachea is air, not connected to the air outside the body"
    assert ph.lung_labels[z][labels == trachea].max() == 0, "airways are not labelled lung"


def test_reproducible_and_options():
    a = make_chest_phantom(shape=(16, 48, 48), spacing=(7.0, 7.0, 15.0), seed=7)
    b = make_chest_phantom(shape=(16, 48, 48), spacing=(7.0, 7.0, 15.0), seed=7)
    c = make_chest_phantom(shape=(16, 48, 48), spacing=(7.0, 7.0, 15.0), seed=8)
    np.testing.assert_array_equal(a.hu, b.hu)
    assert not np.array_equal(a.hu, c.hu)
    clean = make_chest_phantom(shape=(16, 48, 48), spacing=(7.0, 7.0, 15.0), lesions=False)
    assert clean.infection.sum() == 0 and clean.lung_labels.sum() > 0


@pytest.mark.slow
def test_full_size_default_has_lungs_and_lesions():
    """The benchmarks' 512x512x300 default volume (its generation time is not a test: see benchmarks/)."""
    p = make_chest_phantom()
    assert p.hu.shape == (300, 512, 512) and p.infection.sum() > 0
    assert not ((p.infection > 0) & (p.lung_labels == 0)).any()  # lesions lie inside the lungs


def test_write_phantom_nifti_and_labels(tmp_path, ph):
    paths = write_phantom(tmp_path / "case", ph)
    assert sorted(p.name for p in paths.values()) == [
        "ct.nii.gz", "infection.nii.gz", "lesion_classes.nii.gz", "lung_labels.nii.gz"]
    vol = read_volume(paths["ct"])
    np.testing.assert_array_equal(vol.array, ph.hu)
    np.testing.assert_allclose(vol.spacing, ph.spacing)
    labels = sitk.ReadImage(str(paths["lung_labels"]))
    assert labels.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), ph.lung_labels)
    named = write_phantom(tmp_path / "x" / "p.nii.gz", ph)
    assert named["infection"].name == "p_infection.nii.gz" and named["ct"].exists()


def test_write_phantom_dicom_variants(tmp_path):
    ph = make_chest_phantom(shape=(12, 32, 32), spacing=(11.2, 11.2, 20.0), seed=1)
    files = write_phantom_dicom(tmp_path / "ct", ph)
    assert len(files) == 12
    ds = pydicom.dcmread(files[0])
    assert ds.Modality == "CT" and float(ds.RescaleIntercept) == -1024 and ds.PixelRepresentation == 0
    assert files[0].read_bytes()[128:132] == b"DICM"
    np.testing.assert_array_equal(read_volume(tmp_path / "ct").array, ph.hu)
    mr = write_mr_dicom(tmp_path / "mr", ph)
    assert pydicom.dcmread(mr[0]).Modality == "MR"
    gap = write_dicom_missing_slice(tmp_path / "gap", ph, missing=[3, 4])
    assert len(gap) == 10
    default = write_dicom_missing_slice(tmp_path / "gap2")
    assert len(default) == 23
    assert find_volumes([tmp_path / "gap2"])[0].error is None  # refused at read time
