"""Whether a file is a DICOM CT slice, and the header fields that group slices into series.

DICOM files are recognised with or without a ``.dcm`` extension, by the ``DICM`` preamble (or, for old
preamble-less files, by pydicom reading an image header). Non-image DICOM objects (DICOMDIR, reports,
segmentations, RT objects) give ``None``; localizer (scout) images (``ImageType`` LOCALIZER) and colour images
(screen captures such as dose reports) are marked :attr:`DicomInfo.not_slice`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["COLOUR", "LOCALIZER", "DicomInfo", "NotDicom", "Unreadable", "dicom_info"]

_DICOM_TAGS = [
    "SOPClassUID", "SOPInstanceUID", "ImageType", "Modality", "SeriesInstanceUID", "SeriesNumber", "Rows",
    "Columns", "ImageOrientationPatient", "SamplesPerPixel",
]
LOCALIZER = "DICOM localizer (scout / topogram) image, not a slice of a CT volume"
COLOUR = "DICOM colour image (a screen capture such as a dose report?), not a slice of a CT volume"


@dataclass
class DicomInfo:
    """The header fields of one DICOM image that decide its series."""

    series_uid: str
    series_number: str
    group: tuple
    instance_uid: str = ""
    not_slice: str = ""
    """Why the image is no CT slice (:data:`LOCALIZER`, :data:`COLOUR`), else empty. A series made only of such
    images (a study's scouts, its dose-report capture) is left out of a folder; one such file among CT slices
    stays in its series, whose reading then refuses it (a damaged slice must not vanish)."""


class NotDicom(Exception):
    """The file is not DICOM."""


class Unreadable(NotDicom):
    """The file cannot be opened (no read permission, …): whether it is DICOM cannot be told. A caller that only
    looks for DICOM treats it as not DICOM; a folder scan reports it (it may be a slice of a series there)."""


def dicom_info(path: Path) -> DicomInfo | None:
    """Header summary of a DICOM file, ``None`` for DICOM without an image; raises :class:`NotDicom`."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise Unreadable(exc.strerror or type(exc).__name__) from exc
    force = False
    if head[128:132] != b"DICM":
        # old preamble-less files start with a group 0002 or 0008 tag (little endian)
        if head[:2] not in (b"\x02\x00", b"\x08\x00") or len(head) < 8:
            raise NotDicom
        force = True
    import pydicom.uid  # here, not at the top: a NIfTI input never needs pydicom (a fast start)

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_DICOM_TAGS, force=force)
    except Exception:
        if force:
            raise NotDicom from None
        raise
    if "Rows" not in ds or "Columns" not in ds:
        if force:
            raise NotDicom
        sop = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", "") or "")
        sop_name = pydicom.uid.UID(sop).name if sop else ""
        if sop_name and sop_name != sop and "Image" not in sop_name:
            return None  # DICOMDIR, report, structure set, …: not an image
        raise ValueError("no image header (Rows/Columns missing): incomplete or corrupt file?")
    sop = str(ds.get("SOPClassUID", "") or "")
    sop_name = pydicom.uid.UID(sop).name if sop else ""
    if sop_name and sop_name != sop and "Image" not in sop_name:
        return None  # segmentation, RT dose, …: has pixels but is not an image to segment
    image_type = ds.get("ImageType") or []
    values = [image_type] if isinstance(image_type, str) else list(image_type)
    not_slice = (LOCALIZER if "LOCALIZER" in (str(v).strip().upper() for v in values)
                 else COLOUR if int(ds.get("SamplesPerPixel", 1) or 1) != 1 else "")
    uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
    number = str(ds.get("SeriesNumber", "") or "").strip()
    if uid:
        group: tuple = ("uid", uid)
    else:
        iop = tuple(round(float(v), 4) for v in (ds.get("ImageOrientationPatient") or ()))
        group = ("nouid", str(path.parent), int(ds.Rows), int(ds.Columns), iop)
    instance = str(ds.get("SOPInstanceUID", "") or "").strip()
    return DicomInfo(series_uid=uid, series_number=number, group=group, instance_uid=instance,
                     not_slice=not_slice)
