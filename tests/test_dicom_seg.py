"""DICOM-SEG: frames equal the mask slice by slice, the source series and instances are referenced, segments
carry their SNOMED CT codes; phantom series (incl. a mirrored orientation) and every real DICOM series."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from covseg.io.dicom_seg import read_sources, write_dicom_seg
from covseg.io.discover import find_volumes
from covseg.io.errors import CovsegInputError
from covseg.io.read import read_volume
from covseg.synthetic.phantom import make_chest_phantom
from covseg.synthetic.phantom_dicom import write_phantom_dicom

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def _uid(ds: pydicom.Dataset, keyword: str) -> str:
    value = str(ds.get(keyword, "") or "")
    if not value and keyword == "SOPInstanceUID":
        value = str(ds.file_meta.MediaStorageSOPInstanceUID)
    return value


def _read_back(path: Path, sources: list[pydicom.Dataset]) -> tuple[hd.seg.Segmentation, np.ndarray]:
    seg = hd.seg.segread(path)
    uids = [_uid(ds, "SOPInstanceUID") for ds in sources]
    frames = seg.get_pixels_by_source_instance(uids, combine_segments=True, assert_missing_frames_are_empty=True)
    return seg, frames


def _check_references(seg: hd.seg.Segmentation, sources: list[pydicom.Dataset]) -> None:
    uids = {_uid(ds, "SOPInstanceUID") for ds in sources}
    series = seg.ReferencedSeriesSequence
    assert len(series) == 1
    assert {item.ReferencedSOPInstanceUID for item in series[0].ReferencedInstanceSequence} == uids
    for frame in seg.PerFrameFunctionalGroupsSequence:  # every frame points at a source slice
        ref = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert ref in uids
    assert seg.SOPClassUID == SEG_STORAGE and seg.Modality == "SEG"
    assert seg.SeriesInstanceUID != series[0].SeriesInstanceUID


@pytest.fixture(scope="module")
def phantom():
    return make_chest_phantom((24, 64, 64), (5.6, 5.6, 10.0), seed=1)


def test_binary_seg_matches_mask_and_references_series(tmp_path, phantom):
    files = write_phantom_dicom(tmp_path / "dcm", phantom)
    volume = read_volume(tmp_path / "dcm")
    assert np.array_equal(volume.array, phantom.hu)
    path, notes = write_dicom_seg(phantom.infection, volume, files, tmp_path / "seg.dcm",
                                  model={"name": "infnet", "version": "0.5.0"}, software_version="0.1.0")
    assert notes == []
    sources = read_sources(files)
    seg, frames = _read_back(path, sources)
    assert frames.shape == phantom.infection.shape
    assert np.array_equal(frames, phantom.infection)  # sources sorted inferior -> superior = LPS z order
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    _check_references(seg, sources)
    assert seg.NumberOfFrames == int(phantom.infection.reshape(24, -1).any(axis=1).sum())  # empty frames omitted
    (segment,) = seg.SegmentSequence
    assert segment.SegmentLabel == "Infection"
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "52988006"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
    assert segment.AnatomicRegionSequence[0].CodeValue == "39607008"
    assert segment.SegmentAlgorithmType == "AUTOMATIC" and segment.SegmentAlgorithmName == "infnet"
    plain = pydicom.dcmread(path)  # plain pydicom reads it too
    assert plain.Modality == "SEG" and plain.StudyInstanceUID == sources[0].StudyInstanceUID


def test_empty_mask_keeps_every_frame_without_a_warning(tmp_path, phantom, caplog):
    files = write_phantom_dicom(tmp_path / "dcm", phantom)
    volume = read_volume(tmp_path / "dcm")
    empty = np.zeros_like(phantom.infection)
    with caplog.at_level("WARNING"):
        path, _ = write_dicom_seg(empty, volume, files, tmp_path / "seg.dcm", model={"name": "infnet"})
    assert not [r for r in caplog.records if r.name.startswith("highdicom")]  # a negative scan is not a problem
    seg, frames = _read_back(path, read_sources(files))
    assert seg.NumberOfFrames == 24 and not frames.any()


def test_multiclass_seg_has_ggo_and_consolidation(tmp_path, phantom):
    classes = phantom.lesion_classes
    assert {1, 2} <= set(np.unique(classes).tolist())
    files = write_phantom_dicom(tmp_path / "dcm", phantom)
    volume = read_volume(tmp_path / "dcm")
    path, _ = write_dicom_seg(classes, volume, files, tmp_path / "seg.dcm", multiclass=True)
    seg, frames = _read_back(path, read_sources(files))
    assert np.array_equal(frames, classes)
    codes = {s.SegmentNumber: (s.SegmentLabel, s.SegmentedPropertyTypeCodeSequence[0].CodeValue)
             for s in seg.SegmentSequence}
    assert codes == {1: ("Ground-glass opacity", "1217294009"), 2: ("Consolidation", "9656002")}


def test_mirrored_series_frames_follow_the_source_orientation(tmp_path, phantom):
    """A series stored with rows running to the patient's right (IOP -1,0,0,0,1,0): its slice normal points to the
    feet, so its slices run superior to inferior, and its columns right to left; the frames follow the source."""
    files = write_phantom_dicom(tmp_path / "dcm", phantom)
    sx = phantom.spacing[0]
    for f in files:
        ds = pydicom.dcmread(f)
        pixels = ds.pixel_array[:, ::-1].copy()
        ds.PixelData = pixels.tobytes()
        ds.ImageOrientationPatient = [-1, 0, 0, 0, 1, 0]
        ipp = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [f"{ipp[0] + (pixels.shape[1] - 1) * sx:.6g}", f"{ipp[1]:.6g}", f"{ipp[2]:.6g}"]
        ds.save_as(f)
    volume = read_volume(tmp_path / "dcm")
    assert volume.reference.orientation != "LPS"
    assert np.array_equal(volume.array, phantom.hu)  # re-oriented to LPS by the reader
    path, _ = write_dicom_seg(phantom.infection, volume, files, tmp_path / "seg.dcm")
    _, frames = _read_back(path, read_sources(files))
    assert np.array_equal(frames, phantom.infection[::-1, :, ::-1])


def test_errors(tmp_path, phantom):
    files = write_phantom_dicom(tmp_path / "dcm", phantom)
    volume = read_volume(tmp_path / "dcm")
    with pytest.raises(CovsegInputError, match="DICOM-SEG needs a DICOM input"):
        write_dicom_seg(phantom.infection, volume, [], tmp_path / "a.dcm")
    shifted = read_volume(tmp_path / "dcm")
    shifted.origin = (shifted.origin[0] + 0.5 * phantom.spacing[0], *shifted.origin[1:])
    with pytest.raises(CovsegInputError, match="voxel grid"):
        write_dicom_seg(phantom.infection, shifted, files, tmp_path / "b.dcm")
    assert not list(tmp_path.glob("*.dcm")) and not list(tmp_path.glob(".tmp-*"))


@pytest.mark.parametrize(("keyword", "value", "shown"), [("PatientSex", "Male", ""), ("StudyDate", "2006-01-01", ""),
                                                       ("StudyTime", "12:01:00", ""), ("SeriesNumber", -2000, None)])
def test_source_header_values_highdicom_refuses_still_give_a_seg(tmp_path, phantom, keyword, value, shown):
    """Values a scanner or anonymiser writes outside their VR ('Male', an ISO date) or a negative series number:
    highdicom raised ValueError and the whole volume failed, masks and report included."""
    files = write_phantom_dicom(tmp_path / "dcm", phantom)
    for f in files:
        ds = pydicom.dcmread(f)
        setattr(ds, keyword, value)
        ds.save_as(f)
    volume = read_volume(tmp_path / "dcm")
    path, notes = write_dicom_seg(phantom.infection, volume, files, tmp_path / "seg.dcm")
    seg, frames = _read_back(path, read_sources(files))
    assert np.array_equal(frames, phantom.infection)
    if shown is None:  # the series number: a valid one (1 .. 2**31 - 1), none other is noted
        assert 1 <= int(seg.SeriesNumber) < 2**31 and notes == []
    else:
        assert str(seg.get(keyword, "") or "") == shown
        assert notes == [f"the DICOM source's {keyword} {value!r} is not a valid DICOM value: left empty in the "
                         "DICOM-SEG"]


def test_series_number_stays_in_the_range_of_its_type(tmp_path, phantom):
    files = write_phantom_dicom(tmp_path / "dcm", phantom)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.SeriesNumber = 2**31 - 10
        ds.save_as(f)
    path, _ = write_dicom_seg(phantom.infection, read_volume(tmp_path / "dcm"), files, tmp_path / "seg.dcm")
    number = int(pydicom.dcmread(path).SeriesNumber)
    assert 1 <= number < 2**31 and number != 2**31 - 10


def test_a_seg_highdicom_cannot_build_is_one_input_error(tmp_path, phantom, monkeypatch):
    """Whatever else highdicom refuses in a source becomes a CovsegInputError, which the export turns into a warning."""
    import covseg.io.dicom_seg as dicom_seg

    files = write_phantom_dicom(tmp_path / "dcm", phantom)

    def refuse(*args, **kwargs):
        raise ValueError("some attribute highdicom refuses")

    monkeypatch.setattr(dicom_seg.hd.seg, "Segmentation", refuse)
    with pytest.raises(CovsegInputError, match="DICOM-SEG cannot be built from the source series' header .some "
                                               "attribute highdicom refuses."):
        write_dicom_seg(phantom.infection, read_volume(tmp_path / "dcm"), files, tmp_path / "seg.dcm")
    assert not list(tmp_path.glob("*.dcm"))


def _file_mask(path: str) -> np.ndarray:
    """The test mask computed from one source file alone (SimpleITK applies the rescale)."""
    return (sitk.GetArrayFromImage(sitk.ReadImage(path))[0] > -400).astype(np.uint8)


def test_every_real_dicom_series(tmp_path, ct_volumes_dir):
    series = [s for s in find_volumes([ct_volumes_dir]) if s.kind == "dicom"]
    assert len(series) >= 3, [s.path for s in series]
    for i, src in enumerate(series):
        volume = read_volume(src)
        mask = (volume.array > -400).astype(np.uint8)
        path, notes = write_dicom_seg(mask, volume, src.files, tmp_path / f"seg{i}.dcm",
                                      model={"name": "test", "version": "1"})
        sources = read_sources(src.files)
        seg, frames = _read_back(path, sources)
        _check_references(seg, sources)
        assert np.array_equal(frames, mask), src.path  # frame k = LPS slice k for these axial series
        by_uid = {_uid(ds, "SOPInstanceUID"): ds.filename for ds in sources}
        for ds, frame in zip(sources, frames):  # each frame equals the mask of its own source file
            assert np.array_equal(frame, _file_mask(by_uid[_uid(ds, "SOPInstanceUID")])), ds.filename
        series_uid = str(sources[0].get("SeriesInstanceUID", "") or "")
        if series_uid:
            assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
        else:
            assert any("no SeriesInstanceUID" in n for n in notes)
