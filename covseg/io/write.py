"""Write arrays (masks, probability maps) so that they overlay the input volume exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from covseg.io.atomic import atomic_path, check_nifti_written
from covseg.io.read import CTVolume

__all__ = ["write_volume_like"]


def write_volume_like(array_zyx: np.ndarray, volume: CTVolume, path: str | Path,
                      dtype: np.dtype | type = np.uint8) -> Path:
    """Write ``array_zyx`` (same shape as ``volume.array``, LPS ``[z, y, x]``) to ``path`` atomically.

    The LPS re-orientation done by :func:`covseg.io.read.read_volume` is undone and the input's exact
    size, spacing, origin and direction are copied, so for a NIfTI input nibabel's affine of the output
    equals that of the input, and for a DICOM input the output has the series' geometry. The format
    follows the extension (``.nii.gz`` recommended); compression is on. Returns ``Path(path)``.
    """
    array = np.asarray(array_zyx)
    if array.shape != volume.array.shape:
        raise ValueError(f"array shape {array.shape} differs from the volume's {volume.array.shape}")
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        dtype = np.dtype(np.uint8)
    img = volume.to_image(np.ascontiguousarray(array, dtype=dtype))
    ref = volume.reference
    if ref.orientation != "LPS":
        img = sitk.DICOMOrient(img, ref.orientation)
    ref.apply_to(img)  # exact copy, no rounding from the permutation
    path = Path(path)
    with atomic_path(path, verify=check_nifti_written) as tmp:  # ITK leaves a truncated file on a full disk
        sitk.WriteImage(img, str(tmp), True)
    return path
