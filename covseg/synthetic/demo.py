"""The demo's input: a chest phantom CT and its true lesions, written as NIfTI files for ``covseg demo``."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEMO_SHAPE", "DEMO_SPACING", "write_demo_input"]

DEMO_SHAPE = (48, 256, 256)
"""Voxels ``(z, y, x)`` of the default demo phantom."""
DEMO_SPACING = (1.4, 1.4, 6.0)
"""Spacing ``(x, y, z)`` in mm of the default demo phantom (about 36 x 36 x 29 cm)."""


def write_demo_input(folder: Path, shape: tuple[int, int, int] = DEMO_SHAPE, seed: int = 0) -> tuple[Path, Path]:
    """Write ``<folder>/input/phantom.nii.gz`` and its lesions ``<folder>/labels/phantom.nii.gz``.

    Returns the CT path and the labels folder. The field of view stays that of :data:`DEMO_SHAPE` whatever the
    voxel count.
    """
    import SimpleITK as sitk

    from covseg.io.atomic import atomic_path, ensure_writable_dir
    from covseg.synthetic.phantom import make_chest_phantom
    from covseg.synthetic.phantom_nifti import write_phantom

    z, y, x = shape
    spacing = (DEMO_SPACING[0] * DEMO_SHAPE[2] / x, DEMO_SPACING[1] * DEMO_SHAPE[1] / y,
               DEMO_SPACING[2] * DEMO_SHAPE[0] / z)
    phantom = make_chest_phantom(shape=shape, spacing=spacing, seed=seed)
    ct = Path(folder) / "input" / "phantom.nii.gz"
    write_phantom(ct, phantom)
    label = ensure_writable_dir(Path(folder) / "labels") / "phantom.nii.gz"
    with atomic_path(label) as tmp:
        sitk.WriteImage(phantom.image(phantom.infection), str(tmp), True)
    return ct, label.parent
