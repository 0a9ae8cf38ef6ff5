"""A phantom written as NIfTI files: the CT (int16 HU) and its label maps (uint8)."""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from covseg.io.atomic import atomic_path, ensure_writable_dir
from covseg.synthetic.phantom import Phantom, make_chest_phantom

__all__ = ["write_phantom"]


def write_phantom(path_or_dir: str | Path, phantom: Phantom | None = None, *, orientation: str = "LPS",
                  **kwargs) -> dict[str, Path]:
    """Write a phantom's CT (int16 HU NIfTI) and its label maps (uint8 NIfTI); return their paths.

    ``path_or_dir`` ending in ``.nii``/``.nii.gz`` names the CT file and the labels go next to it as
    ``<stem>_lung_labels.nii.gz`` etc.; otherwise it is a folder receiving ``ct.nii.gz``,
    ``lung_labels.nii.gz``, ``infection.nii.gz`` and ``lesion_classes.nii.gz``. ``orientation`` (e.g.
    ``"RAS"``) stores the voxels in another axis order, the geometry staying the same. Without a
    ``phantom``, one is made with ``make_chest_phantom(**kwargs)``.
    """
    if phantom is None:
        phantom = make_chest_phantom(**kwargs)
    target = Path(path_or_dir)
    name = target.name.lower()
    if name.endswith(".nii.gz") or name.endswith(".nii"):
        stem = target.name[: -7] if name.endswith(".nii.gz") else target.name[:-4]
        folder = target.parent
        paths = {"ct": target}
        for key in ("lung_labels", "infection", "lesion_classes"):
            paths[key] = folder / f"{stem}_{key}.nii.gz"
    else:
        folder = target
        paths = {key: folder / f"{key}.nii.gz" for key in ("ct", "lung_labels", "infection", "lesion_classes")}
    ensure_writable_dir(folder)
    arrays = {"ct": phantom.hu, "lung_labels": phantom.lung_labels, "infection": phantom.infection,
              "lesion_classes": phantom.lesion_classes}
    for key, path in paths.items():
        img = phantom.image(arrays[key])
        if orientation != "LPS":
            img = sitk.DICOMOrient(img, orientation)
        with atomic_path(path) as tmp:
            sitk.WriteImage(img, str(tmp), True)
    return paths
