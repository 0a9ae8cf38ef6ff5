"""A phantom written as a DICOM series, one file per axial slice; MR and missing-slice variants for refusal tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from covseg.io.atomic import ensure_writable_dir
from covseg.synthetic.phantom import Phantom, make_chest_phantom

__all__ = ["write_dicom_missing_slice", "write_mr_dicom", "write_phantom_dicom"]

_SMALL = {"shape": (24, 64, 64), "spacing": (5.6, 5.6, 10.0)}
_SOP = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4",
        "PT": "1.2.840.10008.5.1.4.1.1.128"}


def write_phantom_dicom(directory: str | Path, phantom: Phantom | None = None, *, modality: str = "CT",
                        drop_slices: Sequence[int] = (), rescale_slope: float = 1.0,
                        rescale_intercept: float = -1024.0, series_number: int = 1,
                        series_uid: str | None = None, study_uid: str | None = None, prefix: str = "IMG",
                        extension: str = ".dcm", **kwargs) -> list[Path]:
    """Write a phantom as a DICOM series (one file per axial slice); return the file paths.

    Files are ``<prefix><instance:04d><extension>`` with instance 1 the most superior slice (as many
    scanners do, so name order is not z order). Pixels are stored as ``(HU - intercept) / slope``
    (uint16, or int16 if negative) with Modality, RescaleSlope/Intercept (CT only), ImagePosition/
    OrientationPatient, PixelSpacing and SliceThickness. ``drop_slices`` (z indices) are left out, to make
    a series with missing slices. Without ``phantom``, a small one is made: ``make_chest_phantom`` with
    ``shape=(24, 64, 64), spacing=(5.6, 5.6, 10.0)`` unless given in ``kwargs``.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if phantom is None:
        phantom = make_chest_phantom(**{**_SMALL, **kwargs})
    folder = ensure_writable_dir(directory)
    modality = modality.upper()
    sop_class = _SOP.get(modality, "1.2.840.10008.5.1.4.1.1.7")  # secondary capture otherwise
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = generate_uid()
    sx, sy, sz = phantom.spacing
    ox, oy, oz = phantom.origin
    if modality == "CT":
        stored = np.round((phantom.hu.astype(np.float64) - rescale_intercept) / rescale_slope)
    else:
        stored = phantom.hu.astype(np.float64) + 1024
    signed = bool(stored.min() < 0)
    stored = stored.astype(np.int16 if signed else np.uint16)
    nz = stored.shape[0]
    dropped = {int(i) % nz for i in drop_slices}
    paths = []
    for k in range(nz):
        if k in dropped:
            continue
        instance = nz - k
        path = folder / f"{prefix}{instance:04d}{extension}"
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid
        ds.Modality = modality
        ds.PatientName = "Phantom^Covseg"
        ds.PatientID = "COVSEG-PHANTOM"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = f"covseg phantom {modality}"
        ds.InstanceNumber = instance
        ds.ImagePositionPatient = [f"{ox:.6g}", f"{oy:.6g}", f"{oz + k * sz:.6g}"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = f"{oz + k * sz:.6g}"
        ds.PixelSpacing = [f"{sy:.6g}", f"{sx:.6g}"]  # row spacing (y), column spacing (x)
        ds.SliceThickness = f"{sz:.6g}"
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if signed else 0
        if modality == "CT":
            ds.RescaleIntercept = f"{rescale_intercept:g}"
            ds.RescaleSlope = f"{rescale_slope:g}"
            ds.RescaleType = "HU"
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_mr_dicom(directory: str | Path, phantom: Phantom | None = None, **kwargs) -> list[Path]:
    """A phantom series labelled Modality MR (for the non-CT refusal test); ``kwargs`` as
    :func:`write_phantom_dicom`."""
    return write_phantom_dicom(directory, phantom, modality="MR", **kwargs)


def write_dicom_missing_slice(directory: str | Path, phantom: Phantom | None = None,
                              missing: Sequence[int] | None = None, **kwargs) -> list[Path]:
    """A phantom CT series with the z indices ``missing`` (default: the middle slice) left out."""
    if phantom is None:
        phantom = make_chest_phantom(**_SMALL)
    if missing is None:
        missing = (phantom.hu.shape[0] // 2,)
    return write_phantom_dicom(directory, phantom, drop_slices=missing, **kwargs)
