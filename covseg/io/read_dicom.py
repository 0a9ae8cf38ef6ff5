"""Read one DICOM CT series with SimpleITK, refusing what cannot be placed on a regular grid.

Files are ordered by ImagePositionPatient projected on the slice normal; other modalities, missing or duplicate
slices, irregular gaps, mixed orientations or sizes are refused with one line naming the series; a gantry tilt is
accepted with a warning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from warnings import catch_warnings, simplefilter

import numpy as np
import SimpleITK as sitk

from covseg.io.errors import CovsegInputError, first_line, itk_reason
from covseg.io.source import VolumeSource

if TYPE_CHECKING:
    import pydicom

__all__ = ["read_dicom_series"]

_CT_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"}
_HEADER_TAGS = [
    "SOPClassUID", "Modality", "SeriesDescription", "SeriesNumber", "Rows", "Columns",
    "ImageOrientationPatient", "ImagePositionPatient", "NumberOfFrames", "BitsAllocated", "SamplesPerPixel",
    "PhotometricInterpretation", "PixelSpacing", "PixelData",
]

def read_dicom_series(src: VolumeSource, warnings: list[str]) -> sitk.Image:
    """:func:`_read_dicom` with unusable header values (text where numbers belong, short lists …) as one line."""
    try:
        return _read_dicom(src, warnings)
    except CovsegInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for damaged values
        raise CovsegInputError(src.path, f"DICOM header values cannot be used ({type(exc).__name__}: "
                                         f"{first_line(str(exc))})") from None


def _read_dicom(src: VolumeSource, warnings: list[str]) -> sitk.Image:
    where = src.path
    files = [Path(f) for f in src.files]
    if not files:
        raise CovsegInputError(where, "DICOM series has no files")
    headers = []
    for f in files:
        headers.append(_read_header(f))
        _check_pixel_header(headers[-1], f)
    label = _series_label(headers[0])
    modalities = sorted({str(h.get("Modality", "") or "").strip().upper() for h in headers})
    named = [m for m in modalities if m]
    if any(m != "CT" for m in named):
        others = ", ".join(m for m in named if m != "CT")
        raise CovsegInputError(where, f"DICOM series{label} has Modality {others}, not CT; only CT is "
                                      "supported")
    if not named:
        sop = str(headers[0].get("SOPClassUID", "") or "")
        if sop not in _CT_SOP_CLASSES:
            warnings.append("DICOM Modality tag missing; assumed CT")
    sizes = {(int(h.Rows), int(h.Columns)) for h in headers}
    if len(sizes) > 1:
        raise CovsegInputError(where, f"DICOM series{label} mixes image sizes {sorted(sizes)}")
    if len(files) == 1:
        frames = int(headers[0].get("NumberOfFrames", 1) or 1)
        if frames > 1:
            warnings.append("multi-frame DICOM: geometry taken from SimpleITK's reading of the file")
            return _sitk_read_dicom([files[0]], where, single=True)
        return _sitk_read_dicom(files, where)
    iops = []
    for f, h in zip(files, headers):
        iop = h.get("ImageOrientationPatient")
        ipp = h.get("ImagePositionPatient")
        if iop is None or ipp is None or len(iop) != 6 or len(ipp) != 3:
            raise CovsegInputError(f, "DICOM slice has no ImagePositionPatient/ImageOrientationPatient; "
                                      "the slices cannot be ordered")
        iops.append([float(v) for v in iop])
    iops_arr = np.array(iops)
    if np.abs(iops_arr - iops_arr[0]).max() > 1e-3:
        raise CovsegInputError(where, f"DICOM series{label} mixes slice orientations "
                                      "(ImageOrientationPatient)")
    row, col = iops_arr[0, :3], iops_arr[0, 3:]
    normal = np.cross(row, col)
    positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
    proj = positions @ normal
    order = np.argsort(proj, kind="stable")
    proj, positions = proj[order], positions[order]
    files = [files[i] for i in order]
    _check_slice_gaps(proj, where, label, src.unreadable_beside)
    step_vec = (positions[-1] - positions[0]) / (len(files) - 1)
    along = float(step_vec @ normal)
    shear = float(np.linalg.norm(step_vec - along * normal))
    img = _sitk_read_dicom(files, where)
    if shear > 0.01 * abs(along):
        warnings.append(f"slices are sheared (gantry tilt?): {shear:.3g} mm in-plane shift per slice "
                        "is not represented in the geometry")
        # ITK measures the slice spacing from slice to slice, shift included (10.64 mm for 10 mm slices tilted 20
        # degrees): the distance along the normal puts the slices at their true height and keeps volumes right
        img.SetSpacing((*img.GetSpacing()[:2], abs(along)))
    return img


def _read_header(path: Path) -> pydicom.Dataset:
    """The slice's header, PixelData listed but deferred (only its length is read, to check it against the header);
    a file that ends inside its encapsulated (compressed) pixel data is refused, not read without its pixels."""
    import pydicom  # here, not at the top: a NIfTI input never needs pydicom (a fast start)

    with catch_warnings(record=True) as caught:
        simplefilter("always")
        try:
            ds = pydicom.dcmread(path, specific_tags=_HEADER_TAGS, defer_size=64, force=True)
        except Exception as exc:
            raise CovsegInputError(path, f"DICOM header cannot be read ({first_line(str(exc))})") from None
    if any("End of file reached" in str(w.message) for w in caught):
        raise CovsegInputError(path, "damaged DICOM slice: the file ends inside its compressed pixel data "
                                     "(cut short?)")
    return ds


def _check_pixel_header(ds: pydicom.Dataset, path: Path) -> None:
    """Refuse a slice whose pixel description is unusable or disagrees with its pixel data's length."""
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip().upper()
    if spp != 1 or not photometric.startswith("MONOCHROME"):
        raise CovsegInputError(path, f"DICOM slice is a colour image ({photometric}, {spp} samples per pixel), "
                                     "not a CT")
    spacing = [float(v) for v in (ds.get("PixelSpacing") or [1.0, 1.0])]
    if len(spacing) != 2 or not all(math.isfinite(v) and v > 0 for v in spacing):
        raise CovsegInputError(path, f"damaged DICOM header: PixelSpacing {spacing} is not positive and finite")
    if "PixelData" not in ds:
        raise CovsegInputError(path, "DICOM slice has no pixel data")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    element = ds.get_item("PixelData", keep_deferred=True)  # the raw element: its length, value not read
    length = element.length if hasattr(element, "length") else len(element.value or b"")
    if syntax is None or syntax.is_compressed or length is None or length == 0xFFFFFFFF:
        return  # encapsulated (compressed) pixels: the decoder checks them
    bits = int(ds.get("BitsAllocated", 16) or 16)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    expected = int(ds.Rows) * int(ds.Columns) * frames * bits // 8
    if length not in (expected, expected + 1):  # + 1: padding to an even length
        raise CovsegInputError(path, f"damaged DICOM slice: pixel data holds {length} bytes where Rows x Columns "
                                     f"x BitsAllocated ({int(ds.Rows)} x {int(ds.Columns)} x {bits}) say "
                                     f"{expected}")


def _check_slice_gaps(proj: np.ndarray, where: Path, label: str, unreadable: Sequence[Path] = ()) -> None:
    gaps = np.diff(proj)
    same = gaps < 1e-3
    if np.any(same):
        i = int(np.argmax(same))
        n = 1 + int(np.argmin(np.append(same[i:], False)))  # slices at the first repeated position
        positions = int(np.sum(same & ~np.insert(same[:-1], 0, False)))  # runs of repeats
        more = f" and {positions - 1} more position(s) hold several slices" if positions > 1 else ""
        raise CovsegInputError(where, f"DICOM series{label} has {n} slices at the same position "
                                      f"({proj[i]:.3f} mm){more}: duplicate slices or several acquisitions in "
                                      "one series")
    step = float(np.median(gaps))
    bad = np.abs(gaps - step) > max(0.01 * step, 1e-3)
    if not bad.any():
        return
    i = int(np.argmax(bad))
    ratio = gaps[i] / step
    if ratio > 1.5 and abs(ratio - round(ratio)) < 0.1:
        missing = int(sum(round(g / step) - 1 for g in gaps[bad] if g / step > 1.5))
        raise CovsegInputError(where, f"DICOM series{label} has {missing} missing slice(s): gap of "
                                      f"{gaps[i]:.3g} mm between slice positions {proj[i]:.2f} and "
                                      f"{proj[i + 1]:.2f} mm where the spacing is {step:.3g} mm; refusing to "
                                      f"guess the missing data{_unreadable_hint(unreadable)}")
    raise CovsegInputError(where, f"DICOM series{label} has irregular slice spacing (gaps from "
                                  f"{gaps.min():.3g} to {gaps.max():.3g} mm, median {step:.3g} mm)")


def _unreadable_hint(unreadable: Sequence[Path]) -> str:
    """The files beside the series that could not be read: the likely missing slices (each has its own error)."""
    if not unreadable:
        return ""
    return (f" ({len(unreadable)} unreadable DICOM file(s) beside it, e.g. {unreadable[0].name}, may be the "
            "missing slice(s))")


def _sitk_read_dicom(files: list[Path], where: Path, single: bool = False) -> sitk.Image:
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # we check slice spacing ourselves
    try:
        if single:
            return sitk.ReadImage(str(files[0]))
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(f) for f in files])
        reader.MetaDataDictionaryArrayUpdateOff()
        reader.LoadPrivateTagsOff()
        return reader.Execute()
    except RuntimeError as exc:
        for f in files:  # name the culprit if one file alone fails
            try:
                one = sitk.ImageFileReader()
                one.SetFileName(str(f))
                one.Execute()
            except RuntimeError as one_exc:
                raise CovsegInputError(f, "DICOM slice cannot be read (truncated or corrupt?): "
                                          f"{itk_reason(str(one_exc))}") from None
        raise CovsegInputError(where, f"DICOM series cannot be read: {itk_reason(str(exc))}") from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _series_label(ds: pydicom.Dataset) -> str:
    number = str(ds.get("SeriesNumber", "") or "").strip()
    desc = str(ds.get("SeriesDescription", "") or "").strip()
    bits = [f"#{number}" if number else "", f"'{desc}'" if desc else ""]
    text = " ".join(b for b in bits if b)
    return f" {text}" if text else ""

