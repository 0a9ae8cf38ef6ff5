"""A labelled CT volume as the 2D slices covseg's slice models see: windowed lung-box crops and their masks.

Per axial slice holding lung (covseg's lung mask, given): the lung box grown by 3.5 mm
(:func:`covseg.transforms.crop.lung_box`), the HU windowed to [0, 1] with the COVID-SemiSeg window
(:func:`covseg.transforms.intensity.window_hu`), and the infection mask cropped with the same box; this is what
``covseg infer`` feeds the network before resizing. Every slice with infection is kept, plus up to
``negatives_per_positive`` lung slices without infection per positive slice (at least ``min_negatives``), spread
evenly over the volume, so a training also learns where there is no infection.

Used by MONAI Label's fine-tune (:mod:`covseg.apps.monailabel.training_slices`) and by ``covseg slices``
(:mod:`covseg.engines.training.export_slices`), which writes them as a COVID-SemiSeg-layout dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from covseg.transforms.crop import DEFAULT_MARGIN_MM, Box, crop_to_box, lung_box, margin_px
from covseg.transforms.intensity import window_hu

__all__ = ["VolumeSlice", "class_map", "infection_mask", "labelled_volume_slices", "spread"]


@dataclass
class VolumeSlice:
    """Slice ``z`` of a volume (its index in covseg's LPS ``[z, y, x]`` array): ``image`` the windowed lung-box crop
    (float32 in [0, 1]), ``mask`` the infection inside that box (bool, same shape), ``box`` the box (to crop other
    maps of the slice the same way)."""

    z: int
    image: np.ndarray
    mask: np.ndarray
    box: Box

    @property
    def positive(self) -> bool:
        return bool(self.mask.any())


def infection_mask(label: np.ndarray, values: Sequence[int] | None = None) -> np.ndarray:
    """Where a label map is infection: its ``values``, or every non-zero value when None."""
    return label > 0 if values is None else np.isin(label, list(values))


def class_map(label: np.ndarray, class_values: Sequence[int]) -> np.ndarray:
    """0 background, 1 where ``label`` holds the GGO value, 2 where it holds the consolidation value."""
    ggo, consolidation = class_values
    return np.where(label == consolidation, 2, np.where(label == ggo, 1, 0)).astype(np.uint8)


def spread(indices: list[int], count: int) -> list[int]:
    """``count`` of ``indices`` spread evenly (all when there are fewer)."""
    if count >= len(indices):
        return list(indices)
    if count <= 0:
        return []
    picks = np.linspace(0, len(indices) - 1, count).round().astype(int)
    return [indices[i] for i in sorted(set(picks.tolist()))]


def labelled_volume_slices(hu: np.ndarray, spacing: Sequence[float], lung: np.ndarray, infection: np.ndarray,
                    negatives_per_positive: float | None = 1.0, min_negatives: int = 2,
                    margin_mm: float = DEFAULT_MARGIN_MM) -> list[VolumeSlice]:
    """The slices of a volume to train on, in z order (see the module's docstring): ``hu`` its ``[z, y, x]`` array
    (a :class:`covseg.io.read.CTVolume`'s ``array``), ``spacing`` (x, y, z) mm, ``lung`` covseg's lung mask,
    ``infection`` a bool array on the same grid; ``negatives_per_positive`` None: every lung slice."""
    margin = margin_px(spacing, margin_mm)
    boxes = {z: lung_box(lung[z], margin) for z in range(lung.shape[0])}
    lung_z = [z for z, box in boxes.items() if box is not None]
    positive = [z for z in lung_z if crop_to_box(infection[z], boxes[z]).any()]
    if negatives_per_positive is None:
        chosen = lung_z
    else:
        taken = set(positive)
        negative = [z for z in lung_z if z not in taken]
        count = max(int(round(negatives_per_positive * len(positive))), min_negatives)
        chosen = sorted(positive + spread(negative, count))
    return [VolumeSlice(z, window_hu(crop_to_box(hu[z], boxes[z])).astype(np.float32),
                          np.asarray(crop_to_box(infection[z], boxes[z]), bool), boxes[z]) for z in chosen]
