"""Read one image file (NIfTI, MHA / MHD, NRRD) with SimpleITK, refusing what is not one whole 3D scalar image.

A ``.nii.gz`` is decompressed once with its CRC and length checked (ITK's reader would hand back the voxels of a
damaged stream); a NIfTI is checked for truncation against its header, and float voxels are taken through nibabel
(ITK turns NaN / inf into 0). Failures raise ``CovsegInputError("<path>: <reason>")``.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from covseg.io.errors import CovsegInputError, first_line, itk_reason
from covseg.io.file_kinds import special_file_kind
from covseg.monai_import import import_deferring

nib = import_deferring("nibabel", deferred=("pydicom",))  # pydicom: for nibabel's DICOM extension alone

__all__ = ["path_of", "read_image_file"]


def read_image_file(path: Path) -> sitk.Image:
    """The image in ``path`` as a 3D SimpleITK image (a 4th dimension of size 1 dropped)."""
    if not path.exists():
        raise CovsegInputError(path, "does not exist")
    if path.is_dir():
        raise CovsegInputError(path, "is a folder, not an image file")
    if not path.is_file():
        raise CovsegInputError(path, f"is not a regular file ({special_file_kind(path)}); give the image file itself")
    if path.stat().st_size == 0:
        raise CovsegInputError(path, "file is empty (0 bytes)")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:  # no read permission: not "corrupt gzip data", nor an ITK message
        raise CovsegInputError(path, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    name = path.name.lower()
    # a .nii.gz is decompressed once here with its CRC and length checked; ITK's reader would return the
    # voxels of a corrupted stream without complaint
    raw = _gunzip_verified(path) if name.endswith(".nii.gz") else None
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise CovsegInputError(path, _read_failure_reason(path, exc)) from None
    dim, size, ncomp = reader.GetDimension(), tuple(reader.GetSize()), reader.GetNumberOfComponents()
    shape = "x".join(str(s) for s in size)
    if dim < 3:
        raise CovsegInputError(path, f"is a 2D image ({shape}), not a 3D CT volume")
    if dim > 4 or (dim == 4 and size[3] != 1):
        raise CovsegInputError(path, f"is a {dim}D image ({shape}); only 3D volumes are supported "
                                     "(a 4th dimension of size 1 is accepted)")
    if ncomp != 1:
        raise CovsegInputError(path, f"has {ncomp} values per voxel (colour or vector image), not a CT")
    if name.endswith((".nii", ".nii.gz")):
        _check_nifti_spacing(path, raw)
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
        raise CovsegInputError(path, _read_failure_reason(path, exc)) from None
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
            raise CovsegInputError(path, f"corrupt gzip data ({first_line(str(exc))}: the file was damaged "
                                         "after it was written)") from None
        raise CovsegInputError(path, "not a readable image file (not gzip data although named .gz)") from None
    except (OSError, zlib.error) as exc:
        raise CovsegInputError(path, f"corrupt gzip data ({first_line(str(exc))})") from None
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
        raise CovsegInputError(path_of(reader), f"damaged header: {itk_reason(str(exc))}") from None
    return img


def _check_nifti_spacing(path: Path, raw: bytes | None = None) -> None:
    """Refuse a NIfTI file with no voxel size: a zero or non-finite ``pixdim[1..3]``. nibabel and ITK silently
    put 1 mm there (ITK even when an sform holds other scales), and every volume in mL would be wrong, so the
    header is read as written (``raw``: the decompressed bytes of a ``.nii.gz``)."""
    if raw is not None:
        start = raw[:540]
    else:
        with path.open("rb") as handle:
            start = handle.read(540)
    # the fixed-size header block only: a NIfTI-1 header's extensions follow it and are not read here
    found = [kind(binaryblock=start[:size], check=False) for kind, size in ((nib.Nifti1Header, 348),
             (nib.Nifti2Header, 540)) if len(start) >= size and kind.may_contain_header(start[:size])]
    if not found:
        return
    header = found[0]
    pixdim = [float(v) for v in header["pixdim"][1:4]]
    if not all(math.isfinite(v) and v != 0 for v in pixdim):
        raise CovsegInputError(path, f"damaged header: voxel size (pixdim) {tuple(pixdim)} has a zero or non-finite "
                                     "value; volumes in mL cannot be measured")
    if int(header["sform_code"]) > 0:
        _check_sform_scales(path, header, pixdim)


def _check_sform_scales(path: Path, header, pixdim: list[float]) -> None:
    """Refuse an sform whose voxel sizes (its column lengths) are not ``pixdim``'s: nibabel's affine then has the
    sform's voxels and ITK reads pixdim's ("unexpected scales in sform"), so the volumes in mL and the outputs'
    affine would follow one reader or the other. A sheared sform (gantry tilt) is left to the readers."""
    sform = np.array([header["srow_x"][:3], header["srow_y"][:3], header["srow_z"][:3]], float)
    if not np.all(np.isfinite(sform)):
        return
    scales = np.linalg.norm(sform, axis=0)
    if np.any(scales == 0):
        return
    unit = sform / scales
    if np.max(np.abs(unit.T @ unit - np.eye(3))) > 1e-3:  # shear: no voxel size to compare
        return
    if np.allclose(scales, np.abs(pixdim), rtol=1e-3, atol=1e-5):
        return
    sform_mm = tuple(round(float(v), 6) for v in scales)
    raise CovsegInputError(path, f"damaged header: voxel size in pixdim {tuple(pixdim)} disagrees with the sform's "
                                 f"{sform_mm} mm; readers disagree on it, so volumes in mL cannot be measured")


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


def _is_nifti2(path: Path) -> bool:
    """Whether ``path`` (gzip-compressed or not) starts with a NIfTI-2 header: sizeof_hdr 540, magic ``n+2``/``ni2``."""
    try:
        with path.open("rb") as raw:
            compressed = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            head = (gzip.GzipFile(fileobj=raw) if compressed else raw).read(8)
    except (OSError, EOFError, zlib.error):
        return False
    return len(head) == 8 and head[4:7] in (b"n+2", b"ni2") and 540 in (int.from_bytes(head[:4], "little"),
                                                                       int.from_bytes(head[:4], "big"))


def _read_failure_reason(path: Path, exc: Exception) -> str:
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
            return f"corrupt gzip data ({first_line(str(gz_exc))})"
    text = str(exc)
    if "Could not create IO object" in text or "Unable to determine ImageIO reader" in text:
        if _is_nifti2(path):
            return "NIfTI-2 file: not supported (SimpleITK reads NIfTI-1 only); save it as NIfTI-1"
        try:
            with path.open("rb") as fh:
                magic = fh.read(2)
        except OSError:
            magic = b""
        if magic == b"\x1f\x8b" and not path.name.lower().endswith(".gz"):
            # a .nii.gz renamed: no reader looks inside gzip without the suffix
            return ("not a readable image file as named: it holds gzip-compressed data (a .nii.gz? rename it "
                        "so that its name ends with .gz)")
        return "not a readable image file (no reader for this format or content)"
    return f"cannot be read as an image (possibly truncated or corrupt): {itk_reason(text)}"

