"""Read one volume into a :class:`CTVolume`: float32 HU ``[z, y, x]`` in LPS, with its geometry.

NIfTI / MHA / MHD / NRRD are read with SimpleITK; a DICOM series with SimpleITK's
``ImageSeriesReader`` (which applies RescaleSlope / RescaleIntercept) on the files ordered by
ImagePositionPatient projected on the slice normal. The image is then re-oriented to LPS with
``sitk.DICOMOrient(img, "LPS")``; :func:`covseg.io.write.write_volume_like` undoes that. The file formats are read
in :mod:`covseg.io.read_image_file`, DICOM series in :mod:`covseg.io.read_dicom`; this module checks the voxels.

Bad inputs raise ``CovsegInputError("<path>: <reason>")`` (one line). Decisions:

* empty (0 bytes), truncated or corrupt files, and files that are not images: refused;
* a true 2D image: refused; a 3D volume with a single slice (z = 1): accepted, with a warning;
* 4D: refused unless the 4th dimension is 1 (then read as 3D); vector / colour pixels: refused;
* a voxel spacing that is not positive and finite, and a NIfTI header whose ``pixdim`` voxel size holds a zero
  (which readers silently turn into 1 mm): refused as a damaged header;
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

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from covseg.io.discover import find_volumes
from covseg.io.errors import CovsegInputError
from covseg.io.read_dicom import read_dicom_series
from covseg.io.read_image_file import read_image_file
from covseg.io.source import VolumeSource

if TYPE_CHECKING:
    import nibabel as nib

__all__ = ["AIR_HU", "CTVolume", "ImageGeometry", "read_volume"]

AIR_HU = -1024.0
_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class ImageGeometry:
    """The header of an image as read (before re-orientation): everything needed to write alike."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    pixel_type: str = ""
    nifti_header: nib.Nifti1Header | None = field(default=None, compare=False, repr=False)
    """A NIfTI input's header: NIfTI outputs copy its geometry fields (qform, sform and their codes, units, a 4th
    dimension of 1), which ITK's writer would set its own way (:func:`covseg.io.write.write_volume_like`)."""

    @classmethod
    def from_image(cls, img: sitk.Image, nifti_header: nib.Nifti1Header | None = None) -> ImageGeometry:
        """Copy the header of a 3D SimpleITK image (and keep a NIfTI input's own header)."""
        return cls(tuple(img.GetSize()), tuple(img.GetSpacing()), tuple(img.GetOrigin()),
                   tuple(img.GetDirection()), img.GetPixelIDTypeAsString(), nifti_header)

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
    img = read_dicom_series(src, warnings) if src.kind == "dicom" else read_image_file(Path(src.path))
    header = None
    if src.kind != "dicom" and Path(src.path).name.lower().endswith((".nii", ".nii.gz")):
        header = _nifti_header(Path(src.path))
        warnings += _nifti_geometry_warnings(header, img)
    where = src.path
    _check_pixels(img, where)
    _check_geometry(img, where)
    reference = ImageGeometry.from_image(img, header)
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


# --------------------------------------------------------------------------------------- checks
def _nifti_header(path: Path) -> nib.Nifti1Header | None:
    """The NIfTI header of ``path`` as nibabel reads it; ``None`` when nibabel cannot (ITK could: no header to keep)."""
    try:
        from covseg.io.read_image_file import nib  # nibabel, its pydicom import deferred (a fast start)

        return nib.load(str(path)).header
    except Exception:  # noqa: BLE001 - the reader accepted the file; no second opinion to give
        return None


def _nifti_geometry_warnings(header: nib.Nifti1Header | None, img: sitk.Image) -> list[str]:
    """A warning when nibabel's affine of the NIfTI (its sform, when set) is not the geometry ITK read: a sheared
    sform (gantry tilt kept by the converter) has no ITK equivalent, so ITK takes the qform, and covseg's LPS
    orientation, spacing and volumes follow the qform while the outputs keep the input's header."""
    try:
        affine = header.get_best_affine()
        sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    except Exception:  # noqa: BLE001 - no header, or values nibabel cannot use: no second opinion to give
        return []
    if sform_code <= 0 and qform_code <= 0:
        return ["NIfTI geometry: qform and sform codes are both 0, so the file states no orientation and readers "
                "disagree on it (ITK, which covseg uses, and nibabel differ in anterior / posterior): the "
                "orientation letters of the pictures may be wrong; the outputs keep the input's header"]
    if img.GetDimension() != 3 or sform_code <= 0:
        return []
    m = np.array(img.GetDirection(), float).reshape(3, 3) @ np.diag(img.GetSpacing())
    itk = np.eye(4)
    itk[:3, :3], itk[:3, 3] = m, img.GetOrigin()
    itk = np.diag([-1.0, -1.0, 1.0, 1.0]) @ itk  # ITK's LPS to nibabel's RAS
    if np.allclose(itk, affine, atol=1e-3):
        return []
    columns = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    sheared = np.max(np.abs(columns.T @ columns - np.eye(3))) > 1e-3
    why = ("its sform is sheared (gantry tilt?), which ITK cannot represent" if sheared
           else "its sform is not the geometry ITK reads")
    return [f"NIfTI geometry: {why}; covseg measures with the geometry read (the qform's); the NIfTI outputs keep "
            "the input's qform and sform"]


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
