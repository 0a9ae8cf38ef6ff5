"""Labelled CT volumes -> the 2D training slices of covseg's slice models, prepared exactly as inference sees them.

The slices and their crops are :func:`covseg.transforms.volume_slices.labelled_volume_slices`' (every slice with
labelled infection, plus lung slices without it), resized here to the network's square input (the label bilinear,
> 0.5). A labelled volume that cannot be read is skipped with a warning.
Which label values are infection: the pair's ``infection_values`` (from the segment names the viewer sent,
:mod:`covseg.apps.monailabel.label_names`), else every non-zero value.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from covseg.io import read_volume
from covseg.io.errors import CovsegInputError
from covseg.io.labels import read_label
from covseg.transforms.lung import lung_mask
from covseg.transforms.volume_slices import infection_mask, labelled_volume_slices

log = logging.getLogger(__name__)

__all__ = ["infection_of", "slices_of_volume", "training_slices"]


def _resize(array: np.ndarray, size: int) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0]


def infection_of(label: np.ndarray, values: Sequence[int] | None, name: str) -> np.ndarray:
    """The infection mask of a label map: its ``values`` (None: every non-zero value), saying in the log what
    was taken and what was left out."""
    present = [int(v) for v in np.unique(label) if v != 0]
    if values is None:
        if len(present) > 1:
            log.warning("%s: label values %s and no segment names: every non-zero voxel is taken as infection",
                        name, ", ".join(map(str, present)))
        return infection_mask(label)
    kept, left = [v for v in present if v in values], [v for v in present if v not in values]
    log.info("%s: label values %s taken as infection by their segment names%s", name,
             ", ".join(map(str, kept)) or "(none present)",
             f"; {', '.join(map(str, left))} left out" if left else "")
    return infection_mask(label, values)


def slices_of_volume(image_path: str | Path, label_path: str | Path, image_size: int,
                     negatives_per_positive: float = 1.0, min_negatives: int = 2,
                     infection_values: Sequence[int] | None = None) -> list[dict[str, torch.Tensor]]:
    """Training items ``{"image": (1, S, S) in [0, 1], "label": (1, S, S) 0/1}`` of one labelled volume;
    ``infection_values``: the label values that are infection (None: every non-zero value)."""
    volume = read_volume(str(image_path))
    label, _ = read_label(label_path, volume)
    label = infection_of(np.asarray(label), infection_values, Path(label_path).name)
    chosen = labelled_volume_slices(volume.array, volume.spacing, lung_mask(volume.array, volume.spacing), label,
                             negatives_per_positive, min_negatives)
    items = [{"image": _resize(s.image, image_size), "label": (_resize(s.mask, image_size) > 0.5).float()}
             for s in chosen]
    positive = [s for s in chosen if s.positive]
    log.info("%s: %d training slices (%d with infection)", Path(image_path).name, len(items), len(positive))
    return items


def training_slices(datalist: Iterable[Mapping[str, str]], image_size: int, negatives_per_positive: float = 1.0,
                    min_negatives: int = 2) -> list[dict[str, torch.Tensor]]:
    """The training items of every ``{"image": path, "label": path}`` pair (a datastore's ``datalist()``, with
    ``infection_values`` where the label's segment names say them); a pair that cannot be read (damaged file, label
    of another size) is skipped with a one-line warning naming it."""
    items: list[dict[str, torch.Tensor]] = []
    for pair in datalist:
        try:
            items += slices_of_volume(pair["image"], pair["label"], image_size, negatives_per_positive,
                                      min_negatives, pair.get("infection_values"))
        except CovsegInputError as exc:
            log.warning("skipped for training: %s", exc)
    return items
