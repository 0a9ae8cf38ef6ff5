"""Reference labels of a volume: find ``<labels_dir>/<name>.<ext>`` and read it onto the volume's voxel grid; a
mask file (another tool's prediction) read as the volume whose grid a label is read onto (``covseg evaluate``)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from covseg.io.errors import CovsegInputError
from covseg.io.read import CTVolume, ImageGeometry
from covseg.io.read_image_file import read_image_file

__all__ = ["LABEL_SUFFIXES", "find_label", "label_for", "label_names_tried", "read_label", "read_mask",
           "shared_label_note", "volume_stem"]

LABEL_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")


def find_label(labels_dir: str | Path, name: str) -> Path | None:
    """``<labels_dir>/<name>`` + one of :data:`LABEL_SUFFIXES`, or ``None``."""
    for suffix in LABEL_SUFFIXES:
        path = Path(labels_dir) / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def label_names_tried(name: str) -> list[str]:
    """The label names looked up for volume ``name``, in order: the name itself; without the ``_<8 hex>`` tag that
    :mod:`covseg.io.naming` adds to same-named inputs; without nnU-Net's channel suffix ``_0000`` (``case_0000``
    -> ``case``, its ``imagesTr`` / ``labelsTr`` naming)."""
    names = [name]
    tagged = re.fullmatch(r"(.+)_[0-9a-f]{8}", name)
    if tagged:
        names.append(tagged.group(1))
    for base in list(names):
        channel = re.fullmatch(r"(.+)_0000", base)
        if channel:
            names.append(channel.group(1))
    return names


def label_for(labels_dir: str | Path, name: str) -> Path | None:
    """The label of volume ``name`` in ``labels_dir`` (:func:`label_names_tried`, each with
    :data:`LABEL_SUFFIXES`), or ``None``."""
    for candidate in label_names_tried(name):
        found = find_label(labels_dir, candidate)
        if found is not None:
            return found
    return None


def shared_label_note(name: str, label_path: str | Path) -> str | None:
    """A warning when volume ``name`` carries the naming tag of :mod:`covseg.io.naming` (several inputs of one name
    in a batch) and ``label_path`` is the label of the name without it: every input of that name is then scored
    against that one label. None when the label is the volume's own."""
    tagged = re.fullmatch(r"(.+)_([0-9a-f]{8})", name)
    if tagged is None or volume_stem(Path(label_path)) == name:
        return None
    base, tag = tagged.groups()
    return (f"label {Path(label_path).name} is that of {base}, the name without covseg's naming tag _{tag}: several "
            f"inputs are named {base} and each is scored against it (give this one its own label {name}.nii.gz)")


def volume_stem(path: Path) -> str | None:
    """The file's name without its volume suffix (:data:`LABEL_SUFFIXES`: ``case.nii.gz`` -> ``case``), or None when
    it has none."""
    lower = path.name.lower()
    for suffix in LABEL_SUFFIXES:
        if lower.endswith(suffix) and len(lower) > len(suffix):
            return path.name[: -len(suffix)]
    return None


def read_label(path: str | Path, volume: CTVolume) -> tuple[np.ndarray, list[str]]:
    """A label image as a ``[z, y, x]`` LPS array matching ``volume``; raises ``CovsegInputError`` if it cannot.

    The label must have the input's size. A label on the input's grid stored in another order (e.g. RAS for an
    LPS CT) is re-oriented by its own direction, as the input was; any other difference of spacing/origin/direction
    is accepted with a warning (the label is compared voxel by voxel). The file is read with the checks of the
    volume reader (:func:`covseg.io.read_image_file.read_image_file`): a truncated or damaged label is refused in
    one line, where SimpleITK alone would hand back its missing voxels as zeros (and scores against them).
    """
    path = Path(path)
    img = read_image_file(path)
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise CovsegInputError(path, "label is not a 3D single-channel image")
    ref = volume.reference
    warnings = []
    # the same voxels in another storage order (a label saved in RAS for an LPS CT, or with permuted axes): aligned
    # by its own direction, as the volume was; comparing the stored arrays would score a mirrored label
    own = sitk.DICOMOrient(img, "LPS")
    if (own.GetSize() == tuple(reversed(volume.array.shape))
            and np.allclose(own.GetSpacing(), volume.spacing, rtol=1e-3, atol=1e-4)
            and np.allclose(own.GetOrigin(), volume.origin, atol=1e-2)
            and np.allclose(own.GetDirection(), volume.direction, atol=1e-3)):
        return sitk.GetArrayFromImage(own), warnings
    if tuple(img.GetSize()) != tuple(ref.size):
        raise CovsegInputError(path, f"label size {img.GetSize()} differs from the input's {tuple(ref.size)}")
    warnings.append(f"label {path.name} geometry (spacing/origin/direction) differs from the input's; "
                    "compared voxel by voxel")
    img.SetDirection(ref.direction)  # orient like the input so that voxels line up
    oriented = sitk.DICOMOrient(img, "LPS") if ref.orientation != "LPS" else img
    array = sitk.GetArrayFromImage(oriented)
    if array.shape != volume.array.shape:
        raise CovsegInputError(path, f"label shape {array.shape} differs from the input's {volume.array.shape}")
    return array, warnings


def read_mask(path: str | Path) -> CTVolume:
    """A mask or label map file (NIfTI, MHA, NRRD) as a :class:`CTVolume` holding its values (not HU), re-oriented
    to LPS like :func:`covseg.io.read.read_volume`, so that :func:`read_label` reads a reference label onto its grid.

    Read with the checks of :func:`covseg.io.read_image_file.read_image_file` (a truncated or damaged file is refused
    in one line); a voxel spacing that is not positive and finite raises ``CovsegInputError`` too."""
    path = Path(path)
    img = read_image_file(path)
    if not all(np.isfinite(s) and s > 0 for s in img.GetSpacing()):
        raise CovsegInputError(path, f"damaged header: voxel spacing {img.GetSpacing()} is not positive and finite")
    reference = ImageGeometry.from_image(img)
    if reference.orientation != "LPS":
        img = sitk.DICOMOrient(img, "LPS")
    return CTVolume(array=sitk.GetArrayFromImage(img), spacing=tuple(img.GetSpacing()), reference=reference,
                    name=volume_stem(path) or path.name, source_path=path, origin=tuple(img.GetOrigin()),
                    direction=tuple(img.GetDirection()))
