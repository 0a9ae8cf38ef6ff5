"""Read one volume into a :class:`CTVolume`: float32 HU ``[z, y, x]`` in LPS, with its geometry.

NIfTI / MHA / MHD / NRRD are read with SimpleITK; a DICOM series with SimpleITK's
``ImageSeriesReader`` (which applies RescaleSlope / RescaleIntercept) on the files ordered by
ImagePositionPatient projected on the slice normal. The image is then re-oriented to LPS with
``sitk.DICOMOrient(img, "LPS")``; :func:`covseg.io.write.write_volume_like` undoes that.

Bad inputs raise ``CovsegInputError("<path>: <reason>")`` (one line). Decisions:

* empty (0 bytes), truncated or corrupt files, and files that are not images: refused;
* a true 2D image: refused; a 3D volume with a single slice (z = 1): accepted, with a warning;
* 4D: refused unless the 4th dimension is 1 (then read as 3D); vector / colour pixels: refused;
* DICOM whose Modality is not CT (MR, PT, …): refused, naming the modality; Modality missing:
  accepted (with a warning unless the SOP class says CT);
* unsigned 8-bit pixels, or no voxel below -200 HU (no air: a label map, a normalised image, DICOM
  values without their rescale): refused as "does not look like CT in Hounsfield units (values lo..hi…)";
* NaN / ±inf voxels: replaced with -1024 HU (air) and reported in ``warnings``; refused if no voxel is
  finite;
* DICOM series with a missing slice or irregular slice spacing (any gap more than 1 % away from the
  median gap), duplicate slice positions, mixed orientations or image sizes: refused, because the slices
  cannot be placed on a regular grid without inventing data (the message gives the positions);
  a sheared series (gantry tilt) is accepted with a warning (the shear is not represented).
"""

from __future__ import annotations

import gzip
import math
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import SimpleITK as sitk

from covseg.io.discover import VolumeSource, find_volumes, special_file_kind
from covseg.io.errors import CovsegInputError

__all__ = ["AIR_HU", "CTVolume", "ImageGeometry", "read_volume"]

AIR_HU = -1024.0
_CT_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"}
_HEADER_TAGS = [
    "SOPClassUID", "Modality", "SeriesDescription", "SeriesNumber", "Rows", "Columns",
    "ImageOrientationPatient", "ImagePositionPatient", "NumberOfFrames", "BitsAllocated", "SamplesPerPixel",
    "PhotometricInterpretation", "PixelSpacing", "PixelData",
]
_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class ImageGeometry:
    """The header of an image as read (before re-orientation): everything needed to write alike."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    pixel_type: str = ""

    @classmethod
    def from_image(cls, img: sitk.Image) -> ImageGeometry:
        """Copy the header of a 3D SimpleITK image."""
        return cls(tuple(img.GetSize()), tuple(img.GetSpacing()), tuple(img.GetOrigin()),
                   tuple(img.GetDirection()), img.GetPixelIDTypeAsString())

    @property
    def orientation(self) -> str:
        """Three-letter DICOM orientation code of the storage order, e.g. ``"LPS"`` or ``"RAS"``."""
        return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(self.direction)

    def apply_to(self, img: sitk.Image) -> sitk.Image:
        """Set spacing, origin and direction of ``img`` (same size required) to this header's."""
        if tuple(img.GetSize()) != tuple(self.size):
            raise ValueError(f"image size {img.GetSize()} differs from the reference {self.size}")
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(self.direction)
        return img


@dataclass
class CTVolume:
    """A CT volume in Hounsfield units, re-oriented to LPS.

    ``array`` is float32 ``[z, y, x]``; ``spacing`` is (x, y, z) mm of that array, ``origin`` and
    ``direction`` its LPS-image geometry; ``reference`` is the header of the image as stored in the
    input (used to write outputs that overlay it exactly); ``source_files``: the files of a DICOM series
    (for outputs that reference them, e.g. DICOM-SEG), empty for other formats.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    reference: ImageGeometry
    name: str
    source_path: Path
    warnings: list[str] = field(default_factory=list)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = _IDENTITY
    source_files: tuple[Path, ...] = ()

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return float(np.prod(self.spacing)) / 1000.0

    @property
    def shape(self) -> tuple[int, int, int]:
        """``array.shape`` as (z, y, x)."""
        return tuple(self.array.shape)

    def to_image(self, array: np.ndarray | None = None) -> sitk.Image:
        """A SimpleITK image of ``array`` (default: the HU array) with the LPS geometry."""
        img = sitk.GetImageFromArray(self.array if array is None else array)
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(self.direction)
        return img

    @classmethod
    def from_array(cls, array: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                   name: str = "array", origin: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> CTVolume:
        """Wrap an LPS ``[z, y, x]`` HU array (e.g. a phantom) with an identity-direction geometry."""
        array = np.ascontiguousarray(array, dtype=np.float32)
        z, y, x = array.shape
        spacing = tuple(float(s) for s in spacing)
        origin = tuple(float(o) for o in origin)
        ref = ImageGeometry((x, y, z), spacing, origin, _IDENTITY, "32-bit float")
        return cls(array, spacing, ref, name, Path(name), [], origin, _IDENTITY)


def read_volume(src: VolumeSource | str | Path) -> CTVolume:
    """Read ``src`` (a :class:`VolumeSource`, or a path holding exactly one volume) as a CTVolume.

    Raises :class:`CovsegInputError` ``"<path>: <reason>"`` for anything that is not a usable CT.
    """
    if not isinstance(src, VolumeSource):
        found = find_volumes([src])
        if len(found) != 1:
            raise CovsegInputError(src, f"holds {len(found)} volumes; use find_volumes() to read them one "
                                        "by one")
        src = found[0]
    if src.error:
        raise CovsegInputError(src.path, src.error)
    warnings = list(src.warnings)
    img = _read_dicom_checked(src, warnings) if src.kind == "dicom" else _read_file(Path(src.path))
    where = src.path
    _check_pixels(img, where)
    _check_geometry(img, where)
    reference = ImageGeometry.from_image(img)
    if reference.orientation != "LPS":
        img = sitk.DICOMOrient(img, "LPS")
    array = sitk.GetArrayViewFromImage(img).astype(np.float32)
    if img.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        _fix_non_finite(array, where, warnings)
    _check_hu(array, img, where, warnings)
    if array.shape[0] == 1:
        warnings.append("volume has a single slice")
    return CTVolume(array=array, spacing=tuple(img.GetSpacing()), reference=reference, name=src.name,
                    source_path=Path(src.path), warnings=warnings, origin=tuple(img.GetOrigin()),
                    direction=tuple(img.GetDirection()),
                    source_files=tuple(Path(f) for f in src.files) if src.kind == "dicom" else ())


# --------------------------------------------------------------------------------------- files
def _read_file(path: Path) -> sitk.Image:
    if not path.exists():
        raise CovsegInputError(path, "does not exist")
    if path.is_dir():
        raise CovsegInputError(path, "is a folder, not an image file")
    if not path.is_file():
        raise CovsegInputError(path, f"is not a regular file ({special_file_kind(path)}); give the image file itself")
    if path.stat().st_size == 0:
        raise CovsegInputError(path, "file is empty (0 bytes)")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    name = path.name.lower()
    # a .nii.gz is decompressed once here with its CRC and length checked; ITK's reader would return the
    # voxels of a corrupted stream without complaint
    raw = _gunzip_verified(path) if name.endswith(".nii.gz") else None
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise CovsegInputError(path, _diagnose(path, exc)) from None
    dim, size, ncomp = reader.GetDimension(), tuple(reader.GetSize()), reader.GetNumberOfComponents()
    shape = "x".join(str(s) for s in size)
    if dim < 3:
        raise CovsegInputError(path, f"is a 2D image ({shape}), not a 3D CT volume")
    if dim > 4 or (dim == 4 and size[3] != 1):
        raise CovsegInputError(path, f"is a {dim}D image ({shape}); only 3D volumes are supported "
                                     "(a 4th dimension of size 1 is accepted)")
    if ncomp != 1:
        raise CovsegInputError(path, f"has {ncomp} values per voxel (colour or vector image), not a CT")
    nifti = _check_nifti_complete(path, raw)
    if nifti is not None and (raw is not None or np.dtype(nifti.dataobj.dtype).kind == "f"):
        # from the verified bytes (no second decompression); float voxels always through nibabel, because
        # ITK's NIfTI reader turns NaN / inf into 0 (soft tissue!)
        img = _nifti_to_sitk(nifti, reader, raw)
        if img is not None:
            return img
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise CovsegInputError(path, _diagnose(path, exc)) from None
    if img.GetDimension() == 4:
        img = sitk.Extract(img, [*size[:3], 0], [0, 0, 0, 0])
    return img


def _gunzip_verified(path: Path) -> bytes:
    """The whole decompressed stream of a gzip file, its CRC-32 and length checked; one-line errors."""
    try:
        return gzip.decompress(path.read_bytes())
    except EOFError:
        raise CovsegInputError(path, "truncated file (compressed data ends early; incomplete download or "
                                     "copy?)") from None
    except gzip.BadGzipFile as exc:
        if "CRC" in str(exc) or "length" in str(exc):
            raise CovsegInputError(path, f"corrupt gzip data ({_first_line(str(exc))}: the file was damaged "
                                         "after it was written)") from None
        raise CovsegInputError(path, "not a readable image file (not gzip data although named .gz)") from None
    except (OSError, zlib.error) as exc:
        raise CovsegInputError(path, f"corrupt gzip data ({_first_line(str(exc))})") from None
    except MemoryError:
        raise CovsegInputError(path, "too large to decompress in memory") from None


def path_of(reader: sitk.ImageFileReader) -> str:
    """The file name a SimpleITK reader was given."""
    return reader.GetFileName()


def _raw_voxels(nifti: nib.Nifti1Image, raw: bytes | None) -> np.ndarray | None:
    """The unscaled voxels straight from the decompressed bytes (no copy), x fastest; ``None`` when scaled."""
    proxy = nifti.dataobj
    if raw is None or float(proxy.slope) != 1.0 or float(proxy.inter) != 0.0:
        return None
    dtype = nifti.header.get_data_dtype()
    if dtype.kind not in "iuf" or dtype.itemsize > 8:
        return None
    flat = np.frombuffer(raw, dtype=dtype, count=int(np.prod(proxy.shape)), offset=int(proxy.offset))
    return flat if dtype.isnative else flat.astype(dtype.newbyteorder("="))


def _nifti_to_sitk(nifti: nib.Nifti1Image, reader: sitk.ImageFileReader, raw: bytes | None = None) -> sitk.Image | None:
    """A NIfTI's voxels as nibabel reads them (NaN kept) with SimpleITK's geometry; ``None``: let ITK read."""
    size = tuple(reader.GetSize())[:3]
    try:
        flat = _raw_voxels(nifti, raw)
        data = np.asarray(nifti.dataobj) if flat is None else flat
    except Exception:
        return None
    if data.dtype.kind not in "iuf" or data.dtype.itemsize > 8 or data.size != int(np.prod(size)):
        return None
    if flat is not None:  # file order is x fastest: a C-order [z, y, x] array as it stands
        data = flat.reshape(size[::-1])
    else:
        data = data.reshape(size, order="F") if data.shape != size else data
        data = np.ascontiguousarray(data.transpose(2, 1, 0))
    if data.dtype.kind == "f" and data.dtype not in (np.float32, np.float64):
        data = data.astype(np.float32)
    img = sitk.GetImageFromArray(data)
    direction = reader.GetDirection()
    if len(direction) == 16:  # 4D header with a 4th dimension of 1: its 3x3 block
        direction = tuple(direction[r * 4 + c] for r in range(3) for c in range(3))
    try:
        img.SetSpacing(reader.GetSpacing()[:3])
        img.SetOrigin(reader.GetOrigin()[:3])
        img.SetDirection(direction)
    except RuntimeError as exc:  # negative spacing, degenerate direction
        raise CovsegInputError(path_of(reader), f"damaged header: {_itk_reason(str(exc))}") from None
    return img


def _check_nifti_complete(path: Path, raw: bytes | None = None) -> nib.Nifti1Image | None:
    """Refuse a NIfTI file whose voxel data is shorter than its header says (ITK reads it silently).

    ``raw``: the verified decompressed bytes of a ``.nii.gz`` (parsed from memory); a ``.nii`` is checked
    against its file size. Returns the (lazily loaded) nibabel image, or ``None`` for other formats or when
    nibabel cannot parse the header.
    """
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return None
    _check_vox_offset(path, raw)
    try:
        nifti = _nifti_from_bytes(raw) if raw is not None else nib.load(str(path))
        proxy = nifti.dataobj
        expected = int(proxy.offset) + int(np.prod(proxy.shape)) * np.dtype(proxy.dtype).itemsize
    except Exception:
        return None  # let SimpleITK judge
    size = len(raw) if raw is not None else path.stat().st_size
    once = " once uncompressed" if raw is not None else ""
    if size < expected:
        raise CovsegInputError(path, f"truncated file ({size} of {expected} bytes{once}; incomplete download "
                                     "or copy?)")
    if size > expected:  # a single-file NIfTI ends with its voxels: a smaller size in the header is damage
        raise CovsegInputError(path, f"damaged header: the image it describes takes {expected} bytes but the file "
                                     f"has {size}{once}")
    return nifti


def _check_vox_offset(path: Path, raw: bytes | None) -> None:
    """Refuse a single-file NIfTI-1 whose vox_offset points inside its 352-byte header (ITK and nibabel then
    disagree on where the voxels start)."""
    if raw is None:
        with path.open("rb") as fh:
            raw = fh.read(112)
    head = raw[:112]
    if len(head) < 112 or int.from_bytes(head[:4], "little") != 348:
        return  # big-endian or NIfTI-2: nibabel's own checks apply
    offset = float(np.frombuffer(head[108:112], "<f4")[0])
    if not math.isfinite(offset) or offset < 352:
        raise CovsegInputError(path, f"damaged header: vox_offset {offset:g} lies inside the 352-byte header")


def _nifti_from_bytes(raw: bytes) -> nib.Nifti1Image:
    hdr_size = int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big")
    klass = nib.Nifti2Image if 540 in hdr_size else nib.Nifti1Image
    return klass.from_bytes(raw)


def _diagnose(path: Path, exc: Exception) -> str:
    """Turn a SimpleITK read failure into a one-line reason."""
    if path.name.lower().endswith(".gz"):
        try:
            with gzip.open(path, "rb") as fh:
                while fh.read(1 << 22):
                    pass
        except EOFError:
            return "truncated file (compressed data ends early; incomplete download or copy?)"
        except gzip.BadGzipFile:
            return "not a readable image file (not gzip data although named .gz)"
        except (OSError, zlib.error) as gz_exc:
            return f"corrupt gzip data ({_first_line(str(gz_exc))})"
    text = str(exc)
    if "Could not create IO object" in text or "Unable to determine ImageIO reader" in text:
        return "not a readable image file (no reader for this format or content)"
    return f"cannot be read as an image (possibly truncated or corrupt): {_itk_reason(text)}"


def _itk_reason(text: str) -> str:
    """The reason in a SimpleITK / ITK exception text, without source files, class names or addresses."""
    for marker in ("ITK ERROR:", "sitk::ERROR:"):
        if marker in text:
            text = text.split(marker, 1)[1]
            break
    text = re.sub(r"^\s*\w+\s*\(0x[0-9a-fA-F]+\):", "", text)  # "ImageFileReader(0x55d0):"
    text = re.sub(r"\S+\.(?:cxx|cpp|hxx|h|txx)(?::\d+)?:?", "", text)  # /work/src/Code/IO/....cxx:99:
    text = re.sub(r"Exception thrown in SimpleITK \w+:?", "", text)
    text = re.sub(r"\s+for\s+\"[^\"]*\"", "", text)  # the file name: the message names it already
    if "Unable to determine ImageIO reader" in text or "Could not create IO object" in text:
        return "no image reader recognises its content"
    return _first_line(text) or "unknown SimpleITK error"


def _first_line(text: str) -> str:
    return " ".join(text.split())[:200]


# --------------------------------------------------------------------------------------- DICOM
def _read_dicom_checked(src: VolumeSource, warnings: list[str]) -> sitk.Image:
    """:func:`_read_dicom` with unusable header values (text where numbers belong, short lists …) as one line."""
    try:
        return _read_dicom(src, warnings)
    except CovsegInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for damaged values
        raise CovsegInputError(src.path, f"DICOM header values cannot be used ({type(exc).__name__}: "
                                         f"{_first_line(str(exc))})") from None


def _read_dicom(src: VolumeSource, warnings: list[str]) -> sitk.Image:
    where = src.path
    files = [Path(f) for f in src.files]
    if not files:
        raise CovsegInputError(where, "DICOM series has no files")
    headers = []
    for f in files:
        try:
            # PixelData is listed but deferred: only its length is read, to check it against the header
            headers.append(pydicom.dcmread(f, specific_tags=_HEADER_TAGS, defer_size=64, force=True))
        except Exception as exc:
            raise CovsegInputError(f, f"DICOM header cannot be read ({_first_line(str(exc))})") from None
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
    _check_slice_gaps(proj, where, label)
    step_vec = (positions[-1] - positions[0]) / (len(files) - 1)
    along = float(step_vec @ normal)
    shear = float(np.linalg.norm(step_vec - along * normal))
    if shear > 0.01 * abs(along):
        warnings.append(f"slices are sheared (gantry tilt?): {shear:.3g} mm in-plane shift per slice "
                        "is not represented in the geometry")
    return _sitk_read_dicom(files, where)


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


def _check_slice_gaps(proj: np.ndarray, where: Path, label: str) -> None:
    gaps = np.diff(proj)
    if np.any(gaps < 1e-3):
        i = int(np.argmax(gaps < 1e-3))
        n = int(np.sum(gaps < 1e-3)) + 1
        raise CovsegInputError(where, f"DICOM series{label} has {n} slices at the same position "
                                      f"({proj[i]:.3f} mm): duplicate slices or several acquisitions in one "
                                      "series")
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
                                      "guess the missing data")
    raise CovsegInputError(where, f"DICOM series{label} has irregular slice spacing (gaps from "
                                  f"{gaps.min():.3g} to {gaps.max():.3g} mm, median {step:.3g} mm)")


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
                                          f"{_itk_reason(str(one_exc))}") from None
        raise CovsegInputError(where, f"DICOM series cannot be read: {_itk_reason(str(exc))}") from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _series_label(ds: pydicom.Dataset) -> str:
    number = str(ds.get("SeriesNumber", "") or "").strip()
    desc = str(ds.get("SeriesDescription", "") or "").strip()
    bits = [f"#{number}" if number else "", f"'{desc}'" if desc else ""]
    text = " ".join(b for b in bits if b)
    return f" {text}" if text else ""


# --------------------------------------------------------------------------------------- checks
def _check_pixels(img: sitk.Image, where: Path) -> None:
    if img.GetDimension() != 3:
        raise CovsegInputError(where, f"is a {img.GetDimension()}D image, not a 3D CT volume")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise CovsegInputError(where, f"has {img.GetNumberOfComponentsPerPixel()} values per voxel "
                                      "(colour or vector image), not a CT")


def _check_geometry(img: sitk.Image, where: Path) -> None:
    spacing, origin = img.GetSpacing(), img.GetOrigin()
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise CovsegInputError(where, f"damaged header: voxel spacing {tuple(round(s, 6) for s in spacing)} is not "
                                      "positive and finite")
    if not all(math.isfinite(o) for o in origin):
        raise CovsegInputError(where, "damaged header: the image origin is not finite")
    direction = np.array(img.GetDirection(), float).reshape(3, 3)
    if not np.all(np.isfinite(direction)) or abs(abs(np.linalg.det(direction)) - 1.0) > 1e-3:
        raise CovsegInputError(where, "damaged header: the image orientation is not a rotation")


def _fix_non_finite(array: np.ndarray, where: Path, warnings: list[str]) -> None:
    bad = ~np.isfinite(array)
    n = int(bad.sum())
    if n == 0:
        return
    if n == array.size:
        raise CovsegInputError(where, "has no finite voxel value (all NaN or infinite)")
    array[bad] = AIR_HU
    warnings.append(f"{n} NaN/infinite voxels ({100.0 * n / array.size:.2g} %) replaced with {AIR_HU:g} HU")


def _check_hu(array: np.ndarray, img: sitk.Image, where: Path, warnings: list[str]) -> None:
    lo, hi = float(array.min()), float(array.max())
    values = f"values {_fmt(lo)}..{_fmt(hi)}"
    if img.GetPixelID() == sitk.sitkUInt8:
        raise CovsegInputError(where, f"does not look like CT in Hounsfield units ({values}, unsigned 8-bit "
                                      "pixels)")
    if lo >= -200.0 and hi <= 255.0:
        raise CovsegInputError(where, f"does not look like CT in Hounsfield units ({values})")
    if lo > -200.0:
        raise CovsegInputError(where, f"does not look like CT in Hounsfield units ({values}, no air: nothing "
                                      "below -200 HU; a label map, or DICOM without rescale?)")


def _fmt(v: float) -> str:
    return str(int(v)) if math.isfinite(v) and v == int(v) else f"{v:.4g}"
