"""covseg.io: discovery, reading (NIfTI / DICOM, LPS, HU), geometry-exact writing, atomic outputs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from utils import run_python, sitk_geometry

from covseg.io import (
    CovsegInputError,
    CTVolume,
    VolumeSource,
    atomic_path,
    atomic_write_text,
    find_volumes,
    read_volume,
    write_volume_like,
)
from covseg.io.naming import name_tag
from covseg.synthetic.phantom import make_chest_phantom
from covseg.synthetic.phantom_dicom import write_phantom_dicom
from covseg.synthetic.phantom_nifti import write_phantom

SMALL = {"shape": (24, 64, 64), "spacing": (5.6, 5.6, 10.0)}


@pytest.fixture(scope="module")
def phantom():
    return make_chest_phantom(**SMALL, seed=3)


def _assert_same_geometry(a: sitk.Image, b: sitk.Image, atol: float = 1e-4) -> None:
    assert a.GetSize() == b.GetSize()
    for x, y in zip(sitk_geometry(a)[1:], sitk_geometry(b)[1:]):
        np.testing.assert_allclose(x, y, atol=atol)


# ------------------------------------------------------------------------------------------ discovery
def test_find_volumes_formats_names_and_ignored_files(tmp_path, phantom):
    root = tmp_path / "batch"
    write_phantom(root / "case1" / "scan.nii.gz", phantom)
    for f in root.joinpath("case1").glob("scan_*"):
        f.unlink()
    img = phantom.image()
    sitk.WriteImage(img, str(root / "case2.mha"))
    sitk.WriteImage(img, str(root / "case3.nrrd"))
    write_phantom_dicom(root / "case4" / "dicom", phantom, extension="")
    for junk in ("notes.txt", "meta.json", "table.csv", "README.md", ".hidden.nii.gz"):
        (root / junk).write_text("not an image")
    (root / "case4" / "dicom" / "info.json").write_text("{}")

    sources = find_volumes([root])
    assert [(s.name, s.kind) for s in sources] == [
        ("case1_scan", "nifti"), ("case2", "itk"), ("case3", "itk"), ("case4_dicom", "dicom")]
    assert all(s.error is None for s in sources)
    dicom = sources[-1]
    assert len(dicom.files) == 24 and dicom.series_uid and dicom.path == root / "case4" / "dicom"
    for src in sources:
        vol = read_volume(src)
        np.testing.assert_array_equal(vol.array, phantom.hu)


def test_two_series_in_one_folder_give_two_volumes(tmp_path, phantom):
    folder = tmp_path / "study"
    write_phantom_dicom(folder, phantom, series_number=3, prefix="A")
    other = make_chest_phantom(**SMALL, seed=4)
    write_phantom_dicom(folder, other, series_number=7, prefix="B")
    sources = find_volumes([folder])
    assert [s.name for s in sources] == ["study_3", "study_7"]
    assert len({s.series_uid for s in sources}) == 2
    np.testing.assert_array_equal(read_volume(sources[0]).array, phantom.hu)
    np.testing.assert_array_equal(read_volume(sources[1]).array, other.hu)


def test_folder_whose_volumes_were_already_given_is_no_failure(tmp_path, phantom):
    """``covseg infer scans/a.nii.gz scans/`` or ``scans/ scans/``: each volume once, and no false error for the
    folder (it made the batch exit 1 although every volume was done)."""
    scans = tmp_path / "scans"
    ct = write_phantom(scans / "a.nii.gz", phantom)["ct"]
    for f in scans.iterdir():
        if f != ct:
            f.unlink()
    series = tmp_path / "series"
    files = write_phantom_dicom(series, phantom)
    for inputs in ([ct, scans], [scans, scans], [scans, ct], [*files, series], [series, series]):
        found = find_volumes(inputs)
        assert len(found) == 1 and found[0].error is None, [(s.name, s.error) for s in found]
    (tmp_path / "empty").mkdir()  # a folder without any volume still fails
    found = find_volumes([scans, tmp_path / "empty"])
    assert [s.error is None for s in found] == [True, False] and "no CT volume found" in found[1].error


def test_symlinked_folders_are_searched_once_and_a_link_cycle_ends(tmp_path, phantom):
    """A batch folder of links to series stored elsewhere: the linked series were silently left out (audit of
    2026-12-07). A folder linked twice is searched once; a link to an ancestor does not loop."""
    store = tmp_path / "store"
    write_phantom_dicom(store / "series1", phantom)
    nii = write_phantom(store / "nifti" / "scan.nii.gz", phantom)["ct"]
    for f in nii.parent.iterdir():
        if f != nii:
            f.unlink()
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "s1").symlink_to(store / "series1", target_is_directory=True)
    (batch / "s1_again").symlink_to(store / "series1", target_is_directory=True)
    (batch / "n").symlink_to(store / "nifti", target_is_directory=True)
    (batch / "n" / "up").symlink_to(batch, target_is_directory=True)  # a cycle: store/nifti/up -> batch
    sources = find_volumes([batch])
    assert [(s.name, s.kind, s.error) for s in sources] == [("n_scan", "nifti", None), ("s1", "dicom", None)]
    assert len(sources[1].files) == 24


def test_series_named_by_uid_when_numbers_repeat(tmp_path, phantom):
    folder = tmp_path / "study"
    write_phantom_dicom(folder, phantom, series_number=1, prefix="A", series_uid="1.2.3.4.555")
    write_phantom_dicom(folder, phantom, series_number=1, prefix="B", series_uid="1.2.3.4.666")
    assert [s.name for s in find_volumes([folder])] == ["study_1234555", "study_1234666"]


def test_single_series_folder_named_after_folder_and_duplicates_disambiguated(tmp_path, phantom):
    write_phantom_dicom(tmp_path / "p1" / "CT chest", phantom)
    write_phantom(tmp_path / "a" / "ct.nii.gz", phantom)
    write_phantom(tmp_path / "b" / "ct.nii.gz", phantom)
    sources = find_volumes([tmp_path / "p1" / "CT chest", tmp_path / "a" / "ct.nii.gz",
                            tmp_path / "b" / "ct.nii.gz", tmp_path / "a" / "ct.nii.gz"])
    tag = name_tag(str((tmp_path / "b" / "ct.nii.gz").resolve()))  # from the input's path: stable across runs
    assert [s.name for s in sources] == ["CT_chest", "ct", f"ct_{tag}"]  # same file twice: kept once


def test_explicit_dicom_files_are_grouped_into_one_series(tmp_path, phantom):
    files = write_phantom_dicom(tmp_path / "series", phantom)
    sources = find_volumes(files)
    assert len(sources) == 1 and sources[0].kind == "dicom" and sources[0].name == "series"
    assert len(sources[0].files) == len(files)


def test_read_volume_accepts_a_path(tmp_path, phantom):
    write_phantom(tmp_path / "ct.nii.gz", phantom)
    vol = read_volume(tmp_path / "ct.nii.gz")
    assert vol.name == "ct" and vol.array.dtype == np.float32
    assert vol.voxel_volume_ml == pytest.approx(5.6 * 5.6 * 10.0 / 1000)


# ------------------------------------------------------------------------------------------ reading
@pytest.mark.parametrize("slope, extension", [(1.0, ".dcm"), (0.5, "")])
def test_dicom_hu_rescale_order_and_geometry(tmp_path, phantom, slope, extension):
    files = write_phantom_dicom(tmp_path / "s", phantom, rescale_slope=slope, rescale_intercept=-1024,
                                extension=extension)
    # file names count down while z goes up: order must come from ImagePositionPatient
    assert sorted(files)[0].name.startswith("IMG0001")
    vol = read_volume(find_volumes([tmp_path / "s"])[0])
    np.testing.assert_array_equal(vol.array, phantom.hu.astype(np.float32))
    np.testing.assert_allclose(vol.spacing, phantom.spacing, atol=1e-6)
    np.testing.assert_allclose(vol.origin, phantom.origin, atol=1e-3)
    assert vol.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert vol.warnings == []


def test_dicom_gantry_tilt_keeps_the_slice_spacing_along_the_normal(tmp_path, phantom):
    """Slices 10 mm apart along their normal, each shifted 3.64 mm in y (20 degrees of tilt): ITK measured the slice
    spacing from slice to slice, 10.64 mm, so every volume in mL came out 6.4 % too large and the slices too far
    apart along z; the in-plane shift alone is not represented, as the warning says."""
    files = write_phantom_dicom(tmp_path / "s", phantom)
    shift = np.tan(np.deg2rad(20.0))
    for f in files:
        ds = pydicom.dcmread(f)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [f"{x:.6f}", f"{y + shift * (z - phantom.origin[2]):.6f}", f"{z:.6f}"]
        ds.save_as(f)
    vol = read_volume(tmp_path / "s")
    assert any("sheared (gantry tilt?)" in w for w in vol.warnings)
    np.testing.assert_allclose(vol.spacing, phantom.spacing, atol=1e-4)
    assert vol.voxel_volume_ml == pytest.approx(5.6 * 5.6 * 10.0 / 1000, rel=1e-5)
    top = vol.to_image().TransformIndexToPhysicalPoint((0, 0, vol.shape[0] - 1))
    assert top[2] == pytest.approx(phantom.origin[2] + (vol.shape[0] - 1) * 10.0, abs=1e-3)


@pytest.mark.parametrize("orientation", ["RAS", "PIR"])
def test_nifti_in_other_storage_orders_reads_as_lps_and_writes_back(tmp_path, phantom, orientation):
    paths = write_phantom(tmp_path / "ct.nii.gz", phantom, orientation=orientation)
    vol = read_volume(paths["ct"])
    assert vol.reference.orientation == orientation
    np.testing.assert_array_equal(vol.array, phantom.hu)  # same LPS array whatever the storage order
    out = write_volume_like(phantom.lung_labels, vol, tmp_path / "out" / "lungs.nii.gz")
    ref, got = nib.load(paths["lung_labels"]), nib.load(out)
    np.testing.assert_array_equal(got.affine, nib.load(paths["ct"]).affine)
    np.testing.assert_array_equal(np.asarray(got.dataobj), np.asarray(ref.dataobj))
    assert got.get_data_dtype() == np.uint8


def test_oblique_direction_round_trip(tmp_path, phantom):
    img = phantom.image()
    c, s = np.cos(0.3), np.sin(0.3)
    img.SetDirection((0.0, c, -s, -1.0, 0.0, 0.0, 0.0, s, c))  # permuted and rotated about x
    sitk.WriteImage(img, str(tmp_path / "obl.nii.gz"))
    vol = read_volume(tmp_path / "obl.nii.gz")
    out = write_volume_like(vol.array > -500, vol, tmp_path / "mask.nii.gz")
    back = sitk.ReadImage(str(out))
    _assert_same_geometry(back, img, atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), (phantom.hu > -500).astype(np.uint8))


@pytest.mark.parametrize(("qform_code", "sform_code", "extra_dim"), [(2, 1, False), (0, 4, False), (1, 0, False),
                                                                 (1, 1, True), (0, 0, False)])
def test_nifti_output_keeps_the_input_header_geometry(tmp_path, phantom, qform_code, sform_code, extra_dim):
    """Codes, units, axis order and a 4th dimension of 1 as the input has them; ITK wrote codes 1/1 and 3D."""
    affine = np.array([[0.0, 0.0, -10.0, 120.0], [-5.6, 0.0, 0.0, 90.0], [0.0, 5.6, 0.0, -40.0], [0, 0, 0, 1]])
    data = np.ascontiguousarray(phantom.hu.transpose(1, 2, 0)).astype(np.int16)  # stored as (y, x, z) axes
    src = nib.Nifti1Image(data[..., None] if extra_dim else data, None)
    src.set_qform(affine, code=qform_code)
    src.set_sform(affine, code=sform_code)
    src.header.set_xyzt_units("mm", "sec")
    src.header["descrip"] = b"patient name here"
    nib.save(src, str(tmp_path / "ct.nii.gz"))
    vol = read_volume(tmp_path / "ct.nii.gz")
    out = nib.load(write_volume_like(vol.array > -500, vol, tmp_path / "out" / "mask.nii.gz"))
    given = nib.load(tmp_path / "ct.nii.gz")
    assert out.shape == given.shape
    for key in ("qform_code", "sform_code", "xyzt_units", "pixdim", "srow_x", "srow_y", "srow_z", "quatern_b",
                "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z"):
        np.testing.assert_array_equal(out.header[key], given.header[key], err_msg=key)
    np.testing.assert_array_equal(out.affine, given.affine)
    np.testing.assert_array_equal(np.asarray(out.dataobj), (np.asarray(given.dataobj) > -500).astype(np.uint8))
    assert out.get_data_dtype() == np.uint8
    assert out.header["descrip"].item() == b""  # no free text of the input's header goes into the outputs


@pytest.mark.parametrize(("qform_code", "sform_code", "warned"), [(0, 0, True), (1, 0, False), (0, 2, False)])
def test_a_nifti_without_orientation_codes_is_said_to_state_none(tmp_path, phantom, qform_code, sform_code, warned):
    """Codes 0 / 0: ITK and nibabel read different anterior / posterior, so the pictures' letters may be wrong."""
    src = nib.Nifti1Image(np.ascontiguousarray(phantom.hu.transpose(2, 1, 0)).astype(np.int16), np.diag([-5.6, -5.6,
                                                                                                          10.0, 1.0]))
    src.set_qform(src.affine, code=qform_code)
    src.set_sform(src.affine, code=sform_code)
    nib.save(src, str(tmp_path / "ct.nii.gz"))
    assert nib.load(tmp_path / "ct.nii.gz").header["qform_code"] == qform_code
    said = [w for w in read_volume(tmp_path / "ct.nii.gz").warnings if "codes are both 0" in w]
    assert bool(said) == warned, said


def test_nifti_with_a_sheared_sform_gets_outputs_with_its_affine(tmp_path, phantom):
    """A gantry tilt kept in the sform: ITK reads the qform; the outputs used to carry that, not the input's affine."""
    qform = np.diag([-5.6, -5.6, 10.0, 1.0])
    sform = qform.copy()
    sform[1, 2] = 2.0  # y shifts 2 mm per slice
    src = nib.Nifti1Image(np.ascontiguousarray(phantom.hu.transpose(2, 1, 0)).astype(np.int16), None)
    src.set_qform(qform, code=1)
    src.set_sform(sform, code=1)
    nib.save(src, str(tmp_path / "tilt.nii.gz"))
    vol = read_volume(tmp_path / "tilt.nii.gz")
    assert any("sform is sheared" in w for w in vol.warnings)
    out = nib.load(write_volume_like(vol.array > -500, vol, tmp_path / "mask.nii.gz"))
    np.testing.assert_allclose(out.affine, sform, atol=1e-6)
    np.testing.assert_allclose(out.get_qform(), qform, atol=1e-6)


def test_doubly_oblique_45_degree_direction_round_trip(tmp_path, phantom):
    """45 degrees about z, then about x: two axes tie for "closest to L", so the orientation code of the LPS image
    is not the one read, and undoing it by that code scrambled the mask's x and y (the same size here)."""
    c = np.sqrt(0.5)
    rz = np.array([[c, -c, 0.0], [c, c, 0.0], [0.0, 0.0, 1.0]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, c, -c], [0.0, c, c]])
    img = phantom.image()
    img.SetDirection(tuple((rx @ rz).ravel()))
    sitk.WriteImage(img, str(tmp_path / "obl.nii.gz"))
    vol = read_volume(tmp_path / "obl.nii.gz")
    assert vol.reference.orientation != "LPS"
    out = sitk.ReadImage(str(write_volume_like(vol.array > -500, vol, tmp_path / "mask.nii.gz")))
    _assert_same_geometry(out, img, atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), (phantom.hu > -500).astype(np.uint8))


def test_write_volume_like_dtype_and_shape_check(tmp_path, phantom):
    vol = phantom.as_volume()
    out = write_volume_like(np.ones(vol.shape, np.float32) * 0.25, vol, tmp_path / "p.nii.gz",
                            dtype=np.float32)
    assert sitk.ReadImage(str(out)).GetPixelID() == sitk.sitkFloat32
    with pytest.raises(ValueError, match="shape"):
        write_volume_like(np.zeros((2, 2, 2)), vol, tmp_path / "bad.nii.gz")
    assert not (tmp_path / "bad.nii.gz").exists()


def test_ctvolume_from_array():
    vol = CTVolume.from_array(np.zeros((3, 4, 5)) - 1000, spacing=(0.5, 0.5, 2.0))
    assert vol.shape == (3, 4, 5) and vol.reference.size == (5, 4, 3)
    assert vol.voxel_volume_ml == pytest.approx(0.0005)


# ------------------------------------------------------------------------------------------ real data
@pytest.mark.data
@pytest.mark.parametrize("case", ["chest-cip64", "chest-2slice"])
def test_real_dicom_and_nifti_give_the_same_volume(ct_volumes_dir, case):
    nii = read_volume(ct_volumes_dir / case / "ct.nii.gz")
    sources = find_volumes([ct_volumes_dir / case / "dicom"])
    assert len(sources) == 1 and sources[0].kind == "dicom" and sources[0].name == "dicom"
    dcm = read_volume(sources[0])
    np.testing.assert_array_equal(dcm.array, nii.array)
    np.testing.assert_allclose(dcm.spacing, nii.spacing, rtol=1e-5)
    np.testing.assert_allclose(dcm.origin, nii.origin, atol=1e-3)
    np.testing.assert_allclose(dcm.direction, nii.direction, atol=1e-6)


@pytest.mark.data
def test_real_hu_range(ct_volumes_dir):
    vol = read_volume(ct_volumes_dir / "chest-cip64" / "ct.nii.gz")
    assert vol.array.shape == (79, 64, 64)
    assert vol.array.min() == -1007 and vol.array.max() == 1095
    two = read_volume(ct_volumes_dir / "chest-2slice" / "dicom")
    assert two.array.min() == -2048 and two.array.max() == 1502


@pytest.mark.data
def test_real_compressed_dicom_without_series_uid(ct_volumes_dir):
    (src,) = find_volumes([ct_volumes_dir / "abdomen-totalseg" / "example_ct_dicom"])
    assert src.series_uid is None and src.name == "example_ct_dicom"
    vol = read_volume(src)  # JPEG 2000, stored unsigned with RescaleIntercept -1024
    assert vol.array.shape == (20, 512, 512)
    assert vol.array.min() == -1024 and 1000 < vol.array.max() < 3000
    assert np.median(vol.array) < -500  # mostly air around the body
    assert vol.spacing[2] == pytest.approx(2.0)


@pytest.mark.data
@pytest.mark.parametrize("rel", ["chest-cip64/ct.nii.gz", "abdomen-totalseg/example_ct.nii.gz"])
def test_real_nifti_output_affine_equals_input(ct_volumes_dir, tmp_path, rel):
    path = ct_volumes_dir / rel
    vol = read_volume(path)
    out = write_volume_like(vol.array > -400, vol, tmp_path / "mask.nii.gz")
    np.testing.assert_array_equal(nib.load(out).affine, nib.load(path).affine)
    src = nib.load(path)
    expect = (np.asarray(src.dataobj) > -400).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), expect)


@pytest.mark.data
def test_real_dicom_output_geometry_equals_series(ct_volumes_dir, tmp_path):
    folder = ct_volumes_dir / "chest-cip64" / "dicom"
    vol = read_volume(folder)
    out = write_volume_like(vol.array > -400, vol, tmp_path / "mask.nii.gz")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    series = reader.Execute()
    _assert_same_geometry(sitk.ReadImage(str(out)), series, atol=1e-5)


# ------------------------------------------------------------------------------------------ atomic
def test_atomic_path_renames_on_success(tmp_path):
    target = tmp_path / "new" / "infection_mask.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".tmp-")
        assert tmp.name.endswith("-infection_mask.nii.gz")
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    assert os.listdir(target.parent) == ["infection_mask.nii.gz"]


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half-writ")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["report.json"]
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "fresh.txt"):
        raise RuntimeError("boom")
    assert os.listdir(tmp_path) == ["report.json"]


def test_failed_volume_write_leaves_nothing(tmp_path, phantom, monkeypatch):
    vol = phantom.as_volume()

    def broken(*args, **kwargs):
        Path(args[1]).write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_volume_like(vol.array > 0, vol, tmp_path / "mask.nii.gz")
    assert os.listdir(tmp_path) == []


def test_atomic_write_text(tmp_path):
    path = atomic_write_text(tmp_path / "a.json", '{"ok": 1}')
    assert path.read_text() == '{"ok": 1}'
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # usual permissions, not mkstemp's 0600


def test_atomic_write_onto_a_folder_is_one_line_naming_it(tmp_path):
    """``report.html`` (or a --csv FILE) that is a folder: covseg infer ended in an IsADirectoryError traceback
    naming the temporary file."""
    (tmp_path / "report.html").mkdir()
    with pytest.raises(CovsegInputError) as err:
        atomic_write_text(tmp_path / "report.html", "<html></html>")
    assert str(err.value) == f"{tmp_path / 'report.html'}: cannot be written (a folder has that name)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # no temporary left


def test_unwritable_output_folder(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CovsegInputError) as err:
        atomic_write_text(blocker / "out" / "a.txt", "x")
    assert str(err.value).startswith(f"{blocker / 'out'}: output folder is not writable (")

    real_open = os.open

    def deny(path, flags, *args, **kwargs):
        if ".tmp-" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(CovsegInputError) as err:
        atomic_write_text(tmp_path / "ro" / "a.txt", "x")
    assert str(err.value) == f"{tmp_path / 'ro'}: output folder is not writable (Permission denied)"


def test_source_fields():
    src = VolumeSource(name="x", path=Path("x.nii.gz"), kind="nifti")
    assert src.files == [] and src.series_uid is None and src.error is None


def test_copy_of_series_in_two_inputs_stays_two_volumes(tmp_path, phantom):
    write_phantom_dicom(tmp_path / "a", phantom, series_uid="1.2.3")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    sources = find_volumes([tmp_path / "a", tmp_path / "b"])
    assert [s.name for s in sources] == ["a", "b"]
    assert all(len(read_volume(s).array) == 24 for s in sources)



def test_package_names_load_on_first_use_and_training_imports_no_simpleitk() -> None:
    """``covseg.io`` loads its names lazily: a training run (which reads PNG slices only) imports no SimpleITK,
    while ``from covseg.io import read_volume`` still works and unknown names still fail."""
    code = ("import sys; import covseg.io.atomic, covseg.io.slices, covseg.engines.training.semi_procedure; "
            "assert 'SimpleITK' not in sys.modules; "
            "from covseg.io import read_volume, CovsegInputError, write_volume_like; "
            "import covseg.io.read as r; assert read_volume is r.read_volume; assert 'SimpleITK' in sys.modules; "
            "import covseg.io as io; io.no_such_name")
    done = run_python(code)
    assert done.returncode == 1 and "has no attribute 'no_such_name'" in done.stderr, done.stderr[-2000:]


def test_json_text_writes_null_for_non_finite_values():
    import json
    import math

    from covseg.io.strict_json import json_text

    text = json_text({"auc": math.nan, "ci": (0.5, math.inf), "n": 3, "nested": [{"x": -math.inf}], "ok": 0.25})
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"auc": None, "ci": [0.5, None], "n": 3, "nested": [{"x": None}], "ok": 0.25}


def test_the_volume_reader_imports_neither_torch_nor_pydicom_for_a_nifti(tmp_path, phantom) -> None:
    """``covseg infer`` forks its first volume's reader before it imports torch
    (``covseg.engines.inference.dataset``): the reader's imports must not pull torch in (that put the first slice 1 s
    later), nor pydicom for a NIfTI input."""
    ct = write_phantom(tmp_path / "p.nii.gz", phantom)["ct"]
    code = ("import sys; from covseg.engines.inference.dataset import VolumeDataset, VolumePreprocessing; "
            "item = VolumeDataset([sys.argv[1]], VolumePreprocessing())[0]; "
            "print(sorted({'torch', 'monai', 'pydicom'} & set(sys.modules)), item.volume.array.shape, "
            "int(item.lung.any()))")
    done = run_python(code, str(ct))
    assert done.returncode == 0 and done.stdout.startswith("[]"), (done.stdout, done.stderr[-2000:])
