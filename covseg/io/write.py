"""Write arrays (masks, probability maps) so that they overlay the input volume exactly."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from covseg.io.atomic import atomic_path, check_nifti_written
from covseg.io.read import CTVolume

if TYPE_CHECKING:
    import nibabel as nib

__all__ = ["write_volume_like"]

_NIFTI_GEOMETRY = ("pixdim", "xyzt_units", "qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d",
                   "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z")
"""The header fields a NIfTI output copies from a NIfTI input: voxel size, units, qform and sform with their codes."""


def write_volume_like(array_zyx: np.ndarray, volume: CTVolume, path: str | Path,
                      dtype: np.dtype | type = np.uint8) -> Path:
    """Write ``array_zyx`` (same shape as ``volume.array``, LPS ``[z, y, x]``) to ``path`` atomically.

    The LPS re-orientation done by :func:`covseg.io.read.read_volume` is undone and the input's exact
    size, spacing, origin and direction are copied, so for a DICOM input the output has the series' geometry. A
    NIfTI output of a NIfTI input also copies the input header's geometry fields (:data:`_NIFTI_GEOMETRY`) and its
    4th dimension of 1, if any: the same qform, sform, codes and units (ITK's writer would set both codes to 1 and
    rebuild the sform from the qform). The format follows the extension (``.nii.gz`` recommended); compression is
    on. Returns ``Path(path)``.
    """
    array = np.asarray(array_zyx)
    if array.shape != volume.array.shape:
        raise ValueError(f"array shape {array.shape} differs from the volume's {volume.array.shape}")
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        dtype = np.dtype(np.uint8)
    img = _to_storage_order(volume.to_image(np.ascontiguousarray(array, dtype=dtype)), volume.reference.direction)
    ref = volume.reference
    ref.apply_to(img)  # exact copy, no rounding from the permutation
    path = Path(path)
    header = ref.nifti_header if path.name.lower().endswith((".nii", ".nii.gz")) else None
    with atomic_path(path, verify=check_nifti_written) as tmp:  # ITK leaves a truncated file on a full disk
        if header is not None:
            _write_nifti_like(sitk.GetArrayViewFromImage(img), header, tmp)
        else:
            sitk.WriteImage(img, str(tmp), True)
    return path


def _to_storage_order(img: sitk.Image, direction: tuple[float, ...]) -> sitk.Image:
    """Undo the ``sitk.DICOMOrient(image, "LPS")`` of :func:`covseg.io.read.read_volume` for an image of
    ``direction``: its flips, then the inverse of its permutation, as the filter computes them from that direction.

    Re-orienting back by the input's orientation code is not always the inverse: when direction cosines tie (45
    degrees about two axes), the LPS image's own code is another than the one read, and the axes came back swapped.
    """
    probe = sitk.Image([1, 1, 1], sitk.sitkUInt8)
    probe.SetDirection(direction)
    orient = sitk.DICOMOrientImageFilter()
    orient.SetDesiredCoordinateOrientation("LPS")
    orient.Execute(probe)
    order, flips = list(orient.GetPermuteOrder()), [bool(f) for f in orient.GetFlipAxes()]
    if any(flips):
        img = sitk.Flip(img, flips)
    if order != [0, 1, 2]:
        img = sitk.PermuteAxes(img, [order.index(axis) for axis in range(3)])
    return img


def _write_nifti_like(stored_zyx: np.ndarray, header: nib.Nifti1Header, path: Path) -> None:
    """``stored_zyx`` (the input's storage order, ``[k, j, i]``) as a NIfTI with ``header``'s geometry fields."""
    from covseg.io.read_image_file import nib  # nibabel, its pydicom import deferred

    data = stored_zyx.T  # [i, j, k]: the file's axis order
    shape = tuple(int(s) for s in header.get_data_shape())
    if shape[:3] == data.shape and all(s == 1 for s in shape[3:]):
        data = data.reshape(shape, order="F")  # a 4D input of one volume: its outputs too
    nifti2 = isinstance(header, nib.Nifti2Header)
    out = nib.Nifti2Header() if nifti2 else nib.Nifti1Header()
    for key in _NIFTI_GEOMETRY:
        out[key] = header[key]
    out.set_data_dtype(data.dtype)
    (nib.Nifti2Image if nifti2 else nib.Nifti1Image)(data, None, header=out).to_filename(str(path))
