"""Every bad input gives one CovsegInputError line "<path>: <reason>", and never stops discovery."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from covseg.io import CovsegInputError, ImageGeometry, find_volumes, read_volume
from covseg.synthetic.phantom import make_chest_phantom
from covseg.synthetic.phantom_dicom import write_dicom_missing_slice, write_mr_dicom, write_phantom_dicom
from covseg.synthetic.phantom_nifti import write_phantom

SMALL = {"shape": (24, 64, 64), "spacing": (5.6, 5.6, 10.0)}


@pytest.fixture(scope="module")
def phantom():
    return make_chest_phantom(**SMALL, seed=5)


def _refused(path: Path | str, *reason: str) -> str:
    """Read ``path`` (via discovery), expect a one-line error naming ``path`` and the ``reason`` parts."""
    sources = find_volumes([path])
    assert len(sources) == 1
    with pytest.raises(CovsegInputError) as err:
        read_volume(sources[0])
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: "), msg
    for part in reason:
        assert part in msg, msg
    return msg


def _nifti(path: Path, array: np.ndarray) -> Path:
    """Write an (x, y, z[, t]) array with nibabel (which keeps 2D / 4D as they are)."""
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return path


def test_error_message_is_one_line():
    assert str(CovsegInputError("a.nii", "bad\nthing")) == "a.nii: bad thing"
    assert str(CovsegInputError("a.nii: x\ny")) == "a.nii: x y"
    err = CovsegInputError(Path("/d/a.nii"), "r")
    assert (err.path, err.reason) == ("/d/a.nii", "r")


def test_zero_byte_nifti(tmp_path):
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    _refused(tmp_path / "empty.nii.gz", "file is empty (0 bytes)")


@pytest.mark.parametrize("name", ["ct.nii.gz", "ct.nii"])
def test_truncated_nifti(tmp_path, phantom, name):
    full = tmp_path / f"full_{name}"
    sitk.WriteImage(phantom.image(), str(full))
    data = full.read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    _refused(tmp_path / name, "truncated file")


def test_non_image_file_given_explicitly(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    _refused(tmp_path / "notes.txt", "not a readable image file")
    (tmp_path / "garbage.nii.gz").write_bytes(b"\x00" * 1000)
    _refused(tmp_path / "garbage.nii.gz", "not a readable image file")


def test_gzip_data_named_without_gz_is_named_as_such(tmp_path, phantom):
    """A ``.nii.gz`` renamed to ``.nii`` (or given another name) is no unknown format: say what it is."""
    sitk.WriteImage(phantom.image(), str(tmp_path / "ct.nii.gz"))
    data = (tmp_path / "ct.nii.gz").read_bytes()
    for name in ("renamed.nii", "scan.mha"):
        (tmp_path / name).write_bytes(data)
        _refused(tmp_path / name, "gzip-compressed data", "rename it")


@pytest.mark.parametrize("name", ["ct.nii.gz", "ct.nii"])
def test_nifti2_is_named_not_taken_for_a_renamed_file(tmp_path, phantom, name):
    """SimpleITK reads no NIfTI-2: a .nii.gz one was told to "rename it so that its name ends with .gz"."""
    hu = np.ascontiguousarray(phantom.hu.transpose(2, 1, 0)).astype(np.int16)
    nib.save(nib.Nifti2Image(hu, np.diag([-5.6, -5.6, 10.0, 1.0])), str(tmp_path / name))
    msg = _refused(tmp_path / name, "NIfTI-2 file", "save it as NIfTI-1")
    assert "rename" not in msg


def test_non_image_files_in_folders_are_ignored(tmp_path, phantom):
    write_phantom(tmp_path / "ct.nii.gz", phantom)
    for name in ("a.json", "b.txt", "c.csv", "d.md"):
        (tmp_path / name).write_text("x")
    names = [s.name for s in find_volumes([tmp_path])]
    assert names == ["ct", "ct_infection", "ct_lesion_classes", "ct_lung_labels"]


def test_2d_images_refused(tmp_path, phantom):
    _refused(_nifti(tmp_path / "slice.nii.gz", phantom.hu[10].T.copy()), "is a 2D image (64x64)")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((32, 48), np.uint8)), str(tmp_path / "photo.png"))
    _refused(tmp_path / "photo.png", "is a 2D image (48x32)", "not a 3D CT volume")


def test_single_slice_3d_volume_accepted(tmp_path, phantom):
    sitk.WriteImage(phantom.image(phantom.hu[10:11]), str(tmp_path / "one.nii.gz"))
    vol = read_volume(tmp_path / "one.nii.gz")
    assert vol.array.shape == (1, 64, 64) and "single slice" in vol.warnings[0]


def test_4d_refused_unless_4th_dim_is_1(tmp_path, phantom):
    xyz = phantom.hu.transpose(2, 1, 0)
    _refused(_nifti(tmp_path / "dyn.nii.gz", np.stack([xyz] * 3, -1)), "is a 4D image (64x64x24x3)",
             "only 3D volumes")
    vol = read_volume(_nifti(tmp_path / "t1.nii.gz", xyz[..., None]))
    np.testing.assert_array_equal(vol.array, phantom.hu[:, ::-1, ::-1])  # nibabel eye(4) = RAS storage
    img4 = sitk.JoinSeries([phantom.image()])  # MHA keeps a 4th dimension of 1
    sitk.WriteImage(img4, str(tmp_path / "t1.mha"))
    assert img4.GetDimension() == 4
    np.testing.assert_array_equal(read_volume(tmp_path / "t1.mha").array, phantom.hu)


def test_vector_image_refused(tmp_path, phantom):
    rgb = sitk.GetImageFromArray(np.stack([phantom.hu] * 3, -1), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.nii.gz"))
    _refused(tmp_path / "rgb.nii.gz", "has 3 values per voxel")


def test_mr_dicom_refused_naming_the_modality(tmp_path, phantom):
    write_mr_dicom(tmp_path / "mr", phantom)
    _refused(tmp_path / "mr", "Modality MR, not CT")


def test_dicom_without_modality_accepted_with_warning(tmp_path, phantom):
    files = write_phantom_dicom(tmp_path / "s", phantom)
    for f in files:
        ds = pydicom.dcmread(f)
        del ds.Modality
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        ds.save_as(f)
    vol = read_volume(tmp_path / "s")
    assert any("Modality tag missing" in w for w in vol.warnings)


def test_uint8_volume_refused(tmp_path, phantom):
    img = sitk.GetImageFromArray(np.clip(phantom.hu + 1024, 0, 255).astype(np.uint8))
    sitk.WriteImage(img, str(tmp_path / "u8.nii.gz"))
    _refused(tmp_path / "u8.nii.gz", "does not look like CT in Hounsfield units (values 0..255",
             "unsigned 8-bit")


@pytest.mark.parametrize("array, values", [
    (lambda hu: (hu > 0).astype(np.int16) * 255, "(values 0..255)"),
    (lambda hu: ((hu + 1024) / 4095).astype(np.float32), "(values 0..0.4"),
    (lambda hu: (hu + 1024).astype(np.int16), "no air"),
])
def test_non_hu_values_refused(tmp_path, phantom, array, values):
    sitk.WriteImage(phantom.image(array(phantom.hu)), str(tmp_path / "x.nii.gz"))
    _refused(tmp_path / "x.nii.gz", "does not look like CT in Hounsfield units", values)


def test_nan_and_inf_replaced_with_air_and_reported(tmp_path, phantom):
    hu = phantom.hu.astype(np.float32)
    hu[0, 0, :3] = [np.nan, np.inf, -np.inf]
    sitk.WriteImage(phantom.image(hu), str(tmp_path / "nan.nii.gz"))
    vol = read_volume(tmp_path / "nan.nii.gz")
    assert np.isfinite(vol.array).all()
    np.testing.assert_array_equal(vol.array[0, 0, :3], [-1024, -1024, -1024])
    assert any("3 NaN/infinite voxels" in w for w in vol.warnings)
    np.testing.assert_array_equal(vol.array[1:], phantom.hu[1:])
    np.testing.assert_allclose(vol.spacing, phantom.spacing)
    # float NIfTI in RAS storage (nibabel) reads like the int16 one
    xyz = phantom.hu.transpose(2, 1, 0)
    as_float = read_volume(_nifti(tmp_path / "f.nii.gz", xyz.astype(np.float32)))
    as_int = read_volume(_nifti(tmp_path / "i.nii.gz", xyz))
    np.testing.assert_array_equal(as_float.array, as_int.array)
    assert as_float.reference == ImageGeometry(**{**as_int.reference.__dict__, "pixel_type": "32-bit float"})
    sitk.WriteImage(phantom.image(np.full(hu.shape, np.nan, np.float32)), str(tmp_path / "allnan.nii.gz"))
    _refused(tmp_path / "allnan.nii.gz", "no finite voxel")


def _rle_series(folder: Path, phantom) -> list[Path]:
    """The phantom's DICOM series with its pixels re-encoded as RLE Lossless (encapsulated, as PACS exports are)."""
    files = write_phantom_dicom(folder, phantom)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.compress(pydicom.uid.RLELossless)
        ds.save_as(f)
    return files


def test_compressed_dicom_reads_the_same_voxels(tmp_path, phantom):
    write_phantom_dicom(tmp_path / "plain", phantom)
    files = _rle_series(tmp_path / "rle", phantom)
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
    plain, rle = read_volume(tmp_path / "plain"), read_volume(tmp_path / "rle")
    np.testing.assert_array_equal(rle.array, plain.array)
    assert (rle.spacing, rle.reference) == (plain.spacing, plain.reference)


def test_compressed_dicom_cut_short_names_its_file(tmp_path, phantom):
    files = _rle_series(tmp_path / "cut", phantom)
    raw = files[5].read_bytes()
    files[5].write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CovsegInputError) as err:
        read_volume(tmp_path / "cut")
    assert str(err.value) == (f"{files[5]}: damaged DICOM slice: the file ends inside its compressed pixel data "
                              "(cut short?)")


def test_dicom_missing_slice_refused(tmp_path, phantom):
    write_dicom_missing_slice(tmp_path / "gap", phantom, missing=[10])
    _refused(tmp_path / "gap", "1 missing slice(s)", "gap of 20 mm", "spacing is 10 mm")


def test_dicom_irregular_and_duplicate_slices_refused(tmp_path, phantom):
    files = write_phantom_dicom(tmp_path / "irr", phantom)
    ds = pydicom.dcmread(files[3])
    ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 3.0
    ds.save_as(files[3])
    _refused(tmp_path / "irr", "irregular slice spacing")
    files = write_phantom_dicom(tmp_path / "dup", phantom)
    ds = pydicom.dcmread(files[3])
    ds.ImagePositionPatient = pydicom.dcmread(files[4]).ImagePositionPatient
    ds.save_as(files[3])
    _refused(tmp_path / "dup", "2 slices at the same position")


def test_dicom_duplicate_positions_are_counted_per_position(tmp_path, phantom):
    files = write_phantom_dicom(tmp_path / "dups", phantom)
    for a, b in ((files[3], files[4]), (files[7], files[8])):  # two positions hold two slices each
        ds = pydicom.dcmread(a)
        ds.ImagePositionPatient = pydicom.dcmread(b).ImagePositionPatient
        ds.save_as(a)
    _refused(tmp_path / "dups", "2 slices at the same position", "and 1 more position(s) hold several slices")


def test_dicom_series_exported_twice_is_read_once_with_a_warning(tmp_path, phantom):
    """Files repeating an instance of the series (same SOPInstanceUID, e.g. the series copied into two folders)
    carry nothing new: they are left out instead of making every position a duplicate."""
    first = write_phantom_dicom(tmp_path / "export" / "a", phantom)
    shutil.copytree(tmp_path / "export" / "a", tmp_path / "export" / "b")
    (source,) = find_volumes([tmp_path / "export"])
    assert source.files == sorted(first) and source.name == "a"
    assert any("repeat instances of this series" in w and str(tmp_path / "export" / "b") in w
               for w in source.warnings)
    volume = read_volume(source)
    assert volume.array.shape == phantom.hu.shape and len(first) == phantom.hu.shape[0]


def test_dicom_mixed_sizes_refused(tmp_path, phantom):
    write_phantom_dicom(tmp_path / "mix", phantom, series_uid="1.2.3")
    small = make_chest_phantom(shape=(24, 32, 32), spacing=(11.2, 11.2, 10.0))
    write_phantom_dicom(tmp_path / "mix", small, series_uid="1.2.3", prefix="SMALL")
    _refused(tmp_path / "mix", "mixes image sizes")


def test_broken_dicom_file_reported_not_fatal(tmp_path, phantom):
    files = write_phantom_dicom(tmp_path / "s", phantom)
    bad = tmp_path / "s" / "broken.dcm"
    bad.write_bytes(files[0].read_bytes()[:300])  # cut inside the header
    sources = find_volumes([tmp_path / "s"])
    assert sorted(s.error is None for s in sources) == [False, True]
    good = next(s for s in sources if s.error is None)
    assert read_volume(good).array.shape == (24, 64, 64)
    broken = next(s for s in sources if s.error)
    with pytest.raises(CovsegInputError, match=r"broken\.dcm: DICOM header cannot be read .*incomplete or corrupt"):
        read_volume(broken)


def test_broken_end_slice_of_a_series_is_not_lost_silently(tmp_path, phantom):
    """The last slice cut inside its header: the rest reads as a regular (shorter) series, so the volume carries a
    warning naming the unreadable file, besides that file's own error."""
    files = write_phantom_dicom(tmp_path / "s", phantom)
    last = max(files, key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))
    last.write_bytes(last.read_bytes()[:300])
    sources = find_volumes([tmp_path / "s"])
    good = next(s for s in sources if s.error is None)
    assert len(good.files) == len(files) - 1
    volume = read_volume(good)
    assert volume.array.shape[0] == len(files) - 1
    assert any(last.name in w and "could not be read" in w for w in volume.warnings), volume.warnings
    assert [s.path for s in sources if s.error] == [last]
    other = write_phantom_dicom(tmp_path / "clean", phantom)  # a clean folder: no such warning
    assert read_volume(find_volumes([other[0].parent])[0]).warnings == []


def test_broken_middle_slice_named_in_the_missing_slice_error(tmp_path, phantom):
    """A slice cut inside its header in the middle of a series: the gap error names the unreadable file, which has
    its own error line too."""
    files = write_phantom_dicom(tmp_path / "s", phantom)
    by_z = sorted(files, key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))
    middle = by_z[10]
    middle.write_bytes(middle.read_bytes()[:300])
    sources = find_volumes([tmp_path / "s"])
    series = next(s for s in sources if s.error is None)
    with pytest.raises(CovsegInputError) as err:
        read_volume(series)
    message = str(err.value)
    assert "1 missing slice(s)" in message and f"e.g. {middle.name}, may be the missing slice(s)" in message, message
    assert "\n" not in message
    assert [s.path for s in sources if s.error] == [middle]


def test_dicom_slice_with_truncated_pixels_named(tmp_path, phantom):
    files = write_phantom_dicom(tmp_path / "s", phantom)
    data = files[5].read_bytes()
    files[5].write_bytes(data[: len(data) - 2000])
    with pytest.raises(CovsegInputError) as err:
        read_volume(tmp_path / "s")
    msg = str(err.value)
    assert msg.startswith(f"{files[5]}: DICOM slice cannot be read"), msg


def test_non_image_dicom_objects_skipped(tmp_path, phantom):
    write_phantom_dicom(tmp_path / "s", phantom)
    files = write_phantom_dicom(tmp_path / "tmp", phantom)
    sr = pydicom.dcmread(files[0])
    sr.SOPClassUID = sr.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    for tag in ("Rows", "Columns", "PixelData"):
        delattr(sr, tag)
    sr.save_as(tmp_path / "s" / "report.dcm")
    assert [len(s.files) for s in find_volumes([tmp_path / "s"])] == [24]
    _refused(tmp_path / "s" / "report.dcm", "DICOM object without an image")


def test_missing_path_and_empty_folder_do_not_stop_discovery(tmp_path, phantom):
    write_phantom(tmp_path / "ok" / "ct.nii.gz", phantom)
    (tmp_path / "empty").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.md").write_text("x")
    sources = find_volumes([tmp_path / "nothere.nii.gz", tmp_path / "ok" / "ct.nii.gz", tmp_path / "empty",
                            tmp_path / "docs"])
    assert [s.name for s in sources] == ["nothere", "ct", "empty", "docs"]
    assert [s.error is None for s in sources] == [False, True, False, False]
    _refused(tmp_path / "nothere.nii.gz", "does not exist")
    _refused(tmp_path / "empty", "no CT volume found in folder")
    _refused(tmp_path / "docs", "no CT volume found in folder")


def test_read_volume_path_with_several_volumes(tmp_path, phantom):
    write_phantom_dicom(tmp_path, phantom, prefix="A")
    write_phantom_dicom(tmp_path, phantom, prefix="B")
    with pytest.raises(CovsegInputError, match="holds 2 volumes"):
        read_volume(tmp_path)


@pytest.mark.parametrize("name", ["nospacing.nii.gz", "nospacing.nii"])
def test_nifti_without_voxel_size_refused(tmp_path, phantom, name):
    hu = np.transpose(phantom.hu, (2, 1, 0)).astype(np.int16)  # (x, y, z)
    img = nib.Nifti1Image(hu, None)  # no affine: the header is written as set here
    img.header["pixdim"][1:4] = 0  # readers would silently assume 1 mm: every volume in mL would be wrong
    nib.save(img, str(tmp_path / name))
    _refused(tmp_path / name, "damaged header", "voxel size (pixdim) (0.0, 0.0, 0.0)", "cannot be measured")
    with_sform = nib.Nifti1Image(hu, np.diag([*phantom.spacing, 1.0]))
    with_sform.header["pixdim"][1:4] = 0  # ITK would still read 1 mm (it warns of "unexpected scales in sform")
    nib.save(with_sform, str(tmp_path / f"sform-{name}"))
    _refused(tmp_path / f"sform-{name}", "voxel size (pixdim) (0.0, 0.0, 0.0)")
    nib.save(nib.Nifti1Image(hu, np.diag([*phantom.spacing, 1.0])), str(tmp_path / f"good-{name}"))
    np.testing.assert_allclose(read_volume(tmp_path / f"good-{name}").spacing, phantom.spacing, rtol=1e-5)


@pytest.mark.parametrize("qform_code", [0, 1])
def test_nifti_whose_sform_scales_disagree_with_pixdim_refused(tmp_path, phantom, qform_code):
    """An sform set without its pixdim (``img.set_sform(affine)`` on a 1 mm header, a common scripting slip):
    nibabel's affine has the sform's 5.6 mm voxels, ITK read 1 mm ("unexpected scales in sform"), so every mL was
    off by a factor of 300 and the masks' affine was not the input's."""
    hu = np.transpose(phantom.hu, (2, 1, 0)).astype(np.int16)
    affine = np.diag([-phantom.spacing[0], -phantom.spacing[1], phantom.spacing[2], 1.0])
    img = nib.Nifti1Image(hu, None)  # pixdim 1, 1, 1
    img.set_qform(np.eye(4) if qform_code else None, code=qform_code)
    img.set_sform(affine, code=2)
    path = tmp_path / f"q{qform_code}.nii.gz"
    nib.save(img, str(path))
    assert nib.load(str(path)).header["pixdim"][1:4].tolist() == [1.0, 1.0, 1.0]
    _refused(path, "damaged header", "pixdim (1.0, 1.0, 1.0)", "sform", "(5.6, 5.6, 10.0)")
    img.header.set_zooms(phantom.spacing)  # the same sform with its pixdim: read, with the sform's geometry
    nib.save(img, str(tmp_path / "good.nii.gz"))
    volume = read_volume(tmp_path / "good.nii.gz")
    np.testing.assert_allclose(volume.spacing, phantom.spacing, rtol=1e-5)


@pytest.mark.parametrize("name", ["extension.nii.gz", "extension.nii"])
def test_nifti_with_header_extension_or_big_endian_keeps_its_voxel_size(tmp_path, phantom, name):
    """A header extension (as TotalSegmentator's label maps carry) follows the 348-byte header: the voxel-size
    check reads the fixed header alone, so such a file is read with its own spacing, as is a big-endian one."""
    hu = np.transpose(phantom.hu, (2, 1, 0)).astype(np.int16)
    img = nib.Nifti1Image(hu, np.diag([*phantom.spacing, 1.0]))
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"a comment longer than 540 bytes " * 40))
    nib.save(img, str(tmp_path / name))
    np.testing.assert_allclose(read_volume(tmp_path / name).spacing, phantom.spacing, rtol=1e-5)
    big = nib.Nifti1Image(hu.astype(">i2"), np.diag([*phantom.spacing, 1.0]),
                          nib.Nifti1Header(endianness=">"))
    nib.save(big, str(tmp_path / f"big-{name}"))
    assert big.header.endianness == ">" and nib.load(str(tmp_path / f"big-{name}")).header.endianness == ">"
    np.testing.assert_allclose(read_volume(tmp_path / f"big-{name}").spacing, phantom.spacing, rtol=1e-5)


def test_dicom_localizers_are_left_out_of_a_study(tmp_path, phantom):
    """A CT study exports its scout images (ImageType LOCALIZER, here two in their own series, at right angles)
    beside the axial series: they are no volume, so they are left out rather than failing as a series."""
    axial = write_phantom_dicom(tmp_path / "study" / "axial", phantom)
    scouts = write_phantom_dicom(tmp_path / "study" / "scout", phantom)[:2]
    for k, path in enumerate(scouts):
        ds = pydicom.dcmread(path)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        if k:
            ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.save_as(path)
    for extra in set((tmp_path / "study" / "scout").iterdir()) - set(scouts):
        extra.unlink()
    (source,) = find_volumes([tmp_path / "study"])
    assert source.files == sorted(axial)
    (only,) = find_volumes([tmp_path / "study" / "scout"])
    assert only.error and "only 2 DICOM localizer or colour image(s)" in only.error
    (given,) = find_volumes([scouts[0]])
    assert given.error and "localizer" in given.error


def test_dicom_colour_capture_series_is_left_out_but_a_colour_slice_in_a_series_is_refused(tmp_path, phantom):
    axial = write_phantom_dicom(tmp_path / "study" / "axial", phantom)
    capture = write_phantom_dicom(tmp_path / "study" / "dose", phantom)[0]  # a series of its own: a screen capture
    for extra in set((tmp_path / "study" / "dose").iterdir()) - {capture}:
        extra.unlink()
    ds = pydicom.dcmread(capture)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = bytes(int(ds.Rows) * int(ds.Columns) * 3)
    ds.save_as(capture)
    (source,) = find_volumes([tmp_path / "study"])
    assert source.files == sorted(axial)
    ds = pydicom.dcmread(axial[5])  # one slice of the CT series damaged into a colour header
    ds.SamplesPerPixel = 3
    ds.save_as(axial[5])
    (source,) = find_volumes([tmp_path / "study"])
    assert source.files == sorted(axial)  # kept in its series: not silently dropped
    with pytest.raises(CovsegInputError, match="colour image") as err:
        read_volume(source)
    assert str(err.value).startswith(f"{axial[5]}: ")


@pytest.mark.parametrize("damage", ["truncated_gz", "truncated_nii", "garbage", "empty"])
def test_damaged_label_file_refused_in_one_line_not_read_silently(tmp_path, phantom, damage):
    """A damaged reference label must not give scores: ITK alone reads a cut label with its tail as zeros."""
    from covseg.io.labels import read_label

    files = write_phantom(tmp_path / "ct.nii.gz", phantom)
    volume = read_volume(files["ct"])
    label, _ = read_label(files["infection"], volume)  # the intact label reads
    assert label.sum() == int(phantom.infection.sum()) > 0
    raw = files["infection"].read_bytes()
    bad = tmp_path / ("lab.nii" if damage == "truncated_nii" else "lab.nii.gz")
    if damage == "truncated_gz":
        bad.write_bytes(raw[:-200])
    elif damage == "truncated_nii":
        bad.write_bytes(gzip.decompress(raw)[:-4000])
    elif damage == "garbage":
        bad.write_bytes(b"not an image at all\n" * 20)
    else:
        bad.write_bytes(b"")
    with pytest.raises(CovsegInputError) as err:
        read_label(bad, volume)
    msg = str(err.value)
    assert msg.startswith(f"{bad}: ") and "\n" not in msg, msg
    assert "sitk" not in msg and "/src/" not in msg and "Exception thrown" not in msg, msg
    expected = {"truncated_gz": "truncated file", "truncated_nii": "truncated file",
                "garbage": "not a readable image file", "empty": "file is empty"}[damage]
    assert expected in msg, msg


@pytest.mark.parametrize("ct_order, label_order", [("LPS", "RAS"), ("RAS", "LPS"), ("LAS", "RPI")])
def test_label_stored_in_another_order_on_the_same_grid_is_aligned_not_mirrored(tmp_path, phantom, ct_order,
                                                                                label_order):
    """A label saved by another tool in RAS for an LPS CT (same voxels, other storage order) was compared voxel by
    voxel: mirrored left-right and front-back, so Dice scored a mirrored label, under a vague warning."""
    from covseg.io.labels import read_label

    ct = write_phantom(tmp_path / "ct" / "p.nii.gz", phantom, orientation=ct_order)["ct"]
    label = write_phantom(tmp_path / "lab" / "p.nii.gz", phantom, orientation=label_order)["infection"]
    volume = read_volume(ct)
    array, warnings = read_label(label, volume)
    np.testing.assert_array_equal(array, phantom.infection)  # LPS [z, y, x], as the volume's array
    assert warnings == []
    other = nib.load(str(label))  # the same label moved by 30 mm: another grid, compared voxel by voxel, warned
    moved = other.affine.copy()
    moved[:3, 3] += 30.0
    nib.save(nib.Nifti1Image(np.asarray(other.dataobj), moved), str(tmp_path / "moved.nii.gz"))
    _, warnings = read_label(tmp_path / "moved.nii.gz", volume)
    assert len(warnings) == 1 and "compared voxel by voxel" in warnings[0]


def test_nifti_with_a_sheared_sform_warns_that_covseg_measures_with_the_qform(tmp_path, phantom):
    """A sheared sform (gantry tilt kept by the converter) beside a plain qform: ITK reads the qform, nibabel's
    affine is the sform, so covseg's orientation and volumes follow the qform; that is said, not left silent (the
    outputs keep both: ``test_io.py::test_nifti_with_a_sheared_sform_gets_outputs_with_its_affine``)."""
    hu = np.transpose(phantom.hu, (2, 1, 0)).astype(np.int16)
    plain = np.diag([-phantom.spacing[0], -phantom.spacing[1], phantom.spacing[2], 1.0])
    sheared = plain.copy()
    sheared[1, 2] = 2.0  # y moves with z: tilted slices
    img = nib.Nifti1Image(hu, None)
    img.header.set_zooms(phantom.spacing)
    img.set_qform(plain, code=1)
    img.set_sform(sheared, code=1)
    nib.save(img, str(tmp_path / "tilt.nii.gz"))
    volume = read_volume(tmp_path / "tilt.nii.gz")
    assert any("sform" in w and "sheared" in w for w in volume.warnings), volume.warnings
    img.set_sform(plain, code=1)
    nib.save(img, str(tmp_path / "plain.nii.gz"))
    assert read_volume(tmp_path / "plain.nii.gz").warnings == []
