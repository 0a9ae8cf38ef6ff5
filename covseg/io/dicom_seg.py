"""DICOM-SEG output (highdicom): the infection segmentation of a DICOM series, referencing that series.

One Segmentation object (binary segmentation type, one frame per source slice that holds a segment; empty
frames are omitted as highdicom does by default) whose frames point at their source images (Derivation /
Source Image Sequences with the source SOPInstanceUIDs; Referenced Series Sequence with the source
SeriesInstanceUID), so viewers (3D Slicer, OHIF) place it on the CT it was computed from.

Segments and their coded concepts (SNOMED CT):

* binary model: 1 "Infection": category Morphologically abnormal structure (49755003), type Lesion
  (52988006);
* multi-class model (0/1/2 label map): 1 "Ground-glass opacity", type Ground glass opacity (1217294009);
  2 "Consolidation", type Consolidation (9656002); same category.

All segments: anatomic region Lung (39607008), algorithm type AUTOMATIC with the model's name and version as
algorithm identification (family DCM 123110 Artificial Intelligence).

Voxels are taken from the LPS ``[z, y, x]`` arrays of :class:`covseg.io.read.CTVolume` by mapping every pixel of
every source image through its ImagePositionPatient / ImageOrientationPatient / PixelSpacing into the volume's
index space, so the frames are exact whatever the slice order or orientation of the stored series (a source
grid that does not coincide with the volume's voxels is refused).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from pydicom.valuerep import DA, TM

from covseg.io.atomic import atomic_path
from covseg.io.dicom_derived import AI_FAMILY, algorithm_name_version, highdicom_build
from covseg.io.errors import CovsegInputError
from covseg.io.read import CTVolume

__all__ = ["SEGMENTS_BINARY", "SEGMENTS_MULTICLASS", "frames_for_sources", "read_sources", "write_dicom_seg"]

_CATEGORY = codes.SCT.MorphologicallyAbnormalStructure  # SCT 49755003
_LUNG = codes.SCT.Lung  # SCT 39607008
SEGMENTS_BINARY = {1: ("Infection", hd.sr.CodedConcept("52988006", "SCT", "Lesion"), (255, 40, 40))}
SEGMENTS_MULTICLASS = {
    1: ("Ground-glass opacity", hd.sr.CodedConcept("1217294009", "SCT", "Ground glass opacity"), (255, 215, 0)),
    2: ("Consolidation", hd.sr.CodedConcept("9656002", "SCT", "Consolidation"), (255, 0, 255)),
}
_TOL = 0.05  # voxel units: a source pixel must land this close to a voxel centre


def read_sources(files: Sequence[str | Path]) -> list[pydicom.Dataset]:
    """The source series' headers (no pixel data), sorted by position along the slice normal (row x column
    direction; inferior to superior for the usual axial series); an unreadable file raises
    :class:`CovsegInputError`."""
    datasets = []
    for f in files:
        try:
            datasets.append(pydicom.dcmread(f, stop_before_pixels=True))
        except Exception as exc:  # noqa: BLE001 - name the file
            raise CovsegInputError(f, f"DICOM header cannot be read ({' '.join(str(exc).split())[:160]})") from None
    for f, ds in zip(files, datasets):
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise CovsegInputError(f, "multi-frame DICOM source: DICOM-SEG output supports one slice per file")
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            raise CovsegInputError(f, "DICOM slice has no ImagePositionPatient/ImageOrientationPatient")
    iop = np.array([float(v) for v in datasets[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    return sorted(datasets, key=lambda d: float(np.dot([float(v) for v in d.ImagePositionPatient], normal)))


def frames_for_sources(labels: np.ndarray, volume: CTVolume, datasets: Sequence[pydicom.Dataset]) -> np.ndarray:
    """``labels`` (LPS ``[z, y, x]`` like ``volume.array``) resampled onto each source image: ``[n, rows, cols]``.

    Each source pixel's patient position is mapped into the volume's voxel indices; it must fall on a voxel
    centre (within 0.05 voxel) inside the volume, else :class:`CovsegInputError` names the slice.
    """
    if labels.shape != volume.array.shape:
        raise ValueError(f"labels shape {labels.shape} differs from the volume's {volume.array.shape}")
    direction = np.array(volume.direction, float).reshape(3, 3)
    to_index = np.linalg.inv(direction @ np.diag(np.asarray(volume.spacing, float)))
    origin = np.asarray(volume.origin, float)
    out = []
    for ds in datasets:
        rows, cols = int(ds.Rows), int(ds.Columns)
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
        p0 = to_index @ (np.array([float(v) for v in ds.ImagePositionPatient]) - origin)
        step_c = to_index @ (iop[:3] * col_spacing)  # next column
        step_r = to_index @ (iop[3:] * row_spacing)  # next row
        r, c = np.mgrid[0:rows, 0:cols]
        idx = p0[:, None, None] + step_c[:, None, None] * c + step_r[:, None, None] * r  # (x, y, z) indices
        near = np.rint(idx)
        where = ds.get("SOPInstanceUID", "?")
        if np.abs(idx - near).max() > _TOL:
            raise CovsegInputError(volume.source_path, f"source slice {where} does not lie on the volume's voxel "
                                                       "grid; cannot write DICOM-SEG")
        near = near.astype(np.int64)
        size = np.array(labels.shape[::-1])[:, None, None]
        if (near < 0).any() or (near >= size).any():
            raise CovsegInputError(volume.source_path, f"source slice {where} lies outside the volume; cannot "
                                                       "write DICOM-SEG")
        out.append(labels[near[2], near[1], near[0]])
    return np.stack(out).astype(np.uint8)


_TYPE2 = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyID", "StudyDate", "StudyTime",
          "AccessionNumber", "ReferringPhysicianName")


def _complete_type2(ds: pydicom.Dataset) -> pydicom.Dataset:
    """Add the Patient / Study attributes of type 2 (may be empty, must be present) that a source lacks, so
    highdicom can copy them into the SEG (in memory only; the source files are not touched)."""
    for keyword in _TYPE2:
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def _valid_value(keyword: str, value: str) -> bool:
    """Whether highdicom can copy ``value`` of a type 2 ``keyword``: a DA / TM value, PatientSex M, F or O."""
    if not value:
        return True
    if keyword == "PatientSex":
        return value in ("M", "F", "O")
    convert = {"PatientBirthDate": DA, "StudyDate": DA, "StudyTime": TM}.get(keyword)
    try:
        return convert is None or convert(value) is not None
    except ValueError:
        return False


def _clear_invalid_type2(sources: list[pydicom.Dataset]) -> list[str]:
    """Empty the type 2 values highdicom refuses ('Male', an ISO date '2006-01-01', '12:01:00'), which scanners and
    anonymisers write, in memory; return a note per attribute for the report."""
    notes = []
    for keyword in ("PatientSex", "PatientBirthDate", "StudyDate", "StudyTime"):
        bad = [str(ds.get(keyword, "") or "").strip() for ds in sources]
        bad = [v for v in bad if not _valid_value(keyword, v)]
        if not bad:
            continue
        for ds in sources:
            setattr(ds, keyword, "")
        notes.append(f"the DICOM source's {keyword} {bad[0]!r} is not a valid DICOM value: left empty in the DICOM-SEG")
    return notes


def _series_number(source: pydicom.Dataset) -> int:
    """The source's SeriesNumber + 1000, kept within the positive values of its VR (IS: up to 2**31 - 1)."""
    try:
        number = int(source.get("SeriesNumber", 0) or 0)
    except (TypeError, ValueError):
        number = 0
    if 1 <= number + 1000 < 2**31:
        return number + 1000
    return number - 1000 if number > 1000 else 1000


def _complete_identity(sources: list[pydicom.Dataset]) -> list[str]:
    """Fill empty instance / series / study UIDs of anonymised sources (in memory); return notes for the report.

    SOP Instance / Class UIDs come from each file's meta header (Part 10: the same values); a missing Series or
    Study Instance UID is derived from the instances' UIDs (the same every run) and said so in a note.
    """
    notes = []
    for ds in sources:
        meta = getattr(ds, "file_meta", None)
        for keyword, meta_keyword in (("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
                                      ("SOPClassUID", "MediaStorageSOPClassUID")):
            if not str(ds.get(keyword, "") or "") and meta is not None and str(meta.get(meta_keyword, "") or ""):
                setattr(ds, keyword, meta.get(meta_keyword))
    missing = [str(ds.get("SOPInstanceUID", "") or "") == "" for ds in sources]
    if any(missing):
        raise CovsegInputError(sources[missing.index(True)].filename or "?",
                               "DICOM slice has no SOPInstanceUID: a DICOM-SEG cannot reference it")
    instances = [str(ds.SOPInstanceUID) for ds in sources]
    for keyword in ("SeriesInstanceUID", "StudyInstanceUID"):
        if any(not str(ds.get(keyword, "") or "") for ds in sources):
            uid = generate_uid(entropy_srcs=[*instances, keyword])
            for ds in sources:
                setattr(ds, keyword, uid)
            notes.append(f"the DICOM source has no {keyword}: the DICOM-SEG references {uid}, derived from the "
                         "source SOPInstanceUIDs")
    return notes


def _colour(rgb: tuple[int, int, int]) -> hd.color.CIELabColor:
    return hd.color.CIELabColor.from_rgb(*rgb)


def write_dicom_seg(labels: np.ndarray, volume: CTVolume, source_files: Sequence[str | Path], path: str | Path, *,
                    multiclass: bool = False, model: dict | None = None, software_version: str = "",
                    series_number: int | None = None) -> tuple[Path, list[str]]:
    """Write ``labels`` (binary mask, or 0/1/2 class map with ``multiclass``) as DICOM-SEG at ``path``.

    Returns the path and notes for the report (e.g. a frame of reference that had to be supplied).

    ``source_files``: the DICOM series ``volume`` was read from; ``model``: ``{"name", "version"}`` recorded as
    the algorithm; the file is written atomically (a failure leaves nothing at ``path``).
    """
    if not source_files:
        raise CovsegInputError(volume.source_path, "no DICOM source files: DICOM-SEG needs a DICOM input")
    sources = [_complete_type2(ds) for ds in read_sources(source_files)]
    notes = _complete_identity(sources) + _clear_invalid_type2(sources)
    if "FrameOfReferenceUID" not in sources[0]:
        # allowed in minimal files, required by the SEG IOD: one derived from the series UID, the same every run
        frame_uid = generate_uid(entropy_srcs=[str(sources[0].get("SeriesInstanceUID", "")), "frame-of-reference"])
        for ds in sources:
            ds.FrameOfReferenceUID = frame_uid
        notes.append("the DICOM source has no FrameOfReferenceUID: the DICOM-SEG carries one derived from the "
                     "SeriesInstanceUID and is placed on the source by its SOPInstanceUIDs")
    values = np.asarray(labels)
    if not multiclass:
        values = (values > 0).astype(np.uint8)
    elif values.max(initial=0) > 2:
        raise ValueError(f"multi-class labels must be 0/1/2, found {int(values.max())}")
    frames = frames_for_sources(values, volume, sources)
    name, version = algorithm_name_version(model, software_version)
    algorithm = hd.AlgorithmIdentificationSequence(name=name, family=AI_FAMILY, version=version, source="covseg")
    table = SEGMENTS_MULTICLASS if multiclass else SEGMENTS_BINARY
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number, segment_label=label, segmented_property_category=_CATEGORY,
            segmented_property_type=concept, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, anatomic_regions=[_LUNG], display_color=_colour(rgb),
        )
        for number, (label, concept, rgb) in table.items()
    ]
    first = sources[0]
    if series_number is None:
        series_number = _series_number(first)
    # a source value highdicom refuses: no SEG (an input error, which the export makes a warning), other outputs stay
    with highdicom_build(volume.source_path, "DICOM-SEG cannot be built from the source series' header"):
        seg = _segmentation(sources, frames, descriptions, series_number, name, version, software_version, multiclass)
    path = Path(path)
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return path, notes


def _segmentation(sources: list[pydicom.Dataset], frames: np.ndarray, descriptions: list, series_number: int,
                  name: str, version: str, software_version: str, multiclass: bool) -> hd.seg.Segmentation:
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=generate_uid(), series_number=series_number,
        omit_empty_frames=bool(frames.any()),  # an empty mask keeps every frame (as highdicom would, warning)
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="covseg",
        manufacturer_model_name=name[:64], software_versions=f"covseg {software_version}".strip(),
        device_serial_number="none", content_label="INFECTION", content_description=f"{name} {version}"[:64],
        series_description=f"covseg {'GGO/consolidation' if multiclass else 'infection'} ({name})"[:64],
    )
