"""Labelled CT volumes -> a slice dataset in COVID-SemiSeg's layout, which every covseg bundle trains and scores on.

Each volume's slices are :func:`covseg.transforms.volume_slices.labelled_volume_slices`' (the windowed lung-box
crops ``covseg infer`` feeds the network, every slice with infection plus lung slices without it), written as
8-bit PNGs ``<volume>.z<NNNN>.png`` (``NNNN``: the slice's index in covseg's LPS array) with their 0 / 255 masks:
``train/labeled/{images,masks}`` for ``split="train"``, ``test/{images,masks}`` for ``split="test"``. With the label
values of ground-glass opacity and consolidation (``class_values``), the infection is both, and each slice also gets
its class mask (``masks-multiclass``: 0 / 1 GGO / 2 consolidation) and one 0 / 255 mask per class (``masks-ggo``,
``masks-consolidation``), what ``bundles/multiclass_infnet`` trains and scores on. The bundles' validation split then
holds out whole volumes (:func:`covseg.io.slices.split_train_val`).

A volume's slices are written into a hidden staging folder and moved into place when all are written, replacing
that volume's slices of an earlier export; a staging folder left by a killed run is removed by the next one.
``slices-<split>.csv`` lists every exported slice (volume, source, label, z, file, infection pixels).
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from covseg.io.atomic import atomic_path, atomic_write_text
from covseg.io.errors import CovsegInputError
from covseg.io.labels import label_for, label_names_tried, read_label
from covseg.io.read import read_volume
from covseg.io.slices import write_grey
from covseg.transforms.crop import crop_to_box
from covseg.transforms.lung import lung_mask
from covseg.transforms.volume_slices import class_map, infection_mask, labelled_volume_slices

log = logging.getLogger(__name__)

__all__ = ["SPLITS", "STAGING_PREFIX", "ExportedVolume", "export_volume", "remove_staging", "split_folder",
           "write_manifest"]

SPLITS = ("train", "test")
STAGING_PREFIX = ".covseg-staging-"
MANIFEST_FIELDS = ("volume", "source", "label", "z", "file", "infection_pixels")
CLASS_FOLDERS = ("masks-multiclass", "masks-ggo", "masks-consolidation")


@dataclass
class ExportedVolume:
    """What one volume gave: its name, source and label paths, and one manifest row per slice written."""

    name: str
    source: str
    label: str
    rows: list[dict]

    @property
    def positives(self) -> int:
        return sum(row["infection_pixels"] > 0 for row in self.rows)


def split_folder(dataset_dir: str | Path, split: str) -> Path:
    """Where a split's ``images`` and ``masks`` go: ``train/labeled`` or ``test``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return Path(dataset_dir) / ("train/labeled" if split == "train" else "test")


def remove_staging(dataset_dir: str | Path) -> list[Path]:
    """Remove the staging folders a killed export left in ``dataset_dir``; returns them."""
    left = sorted(Path(dataset_dir).glob(f"{STAGING_PREFIX}*")) if Path(dataset_dir).is_dir() else []
    for folder in left:
        shutil.rmtree(folder, ignore_errors=True)
    return left


def _write_class_masks(folder: Path, file: str, classes: np.ndarray) -> None:
    with atomic_path(folder / "masks-multiclass" / file) as tmp:
        Image.fromarray(classes).save(tmp, format="PNG")
    write_grey(folder / "masks-ggo" / file, (classes == 1).astype(np.float32))
    write_grey(folder / "masks-consolidation" / file, (classes == 2).astype(np.float32))


def export_volume(source, labels_dir: str | Path, dataset_dir: str | Path, split: str = "train", *,
                  negatives_per_positive: float | None = 1.0, label_values: Sequence[int] | None = None,
                  class_values: Sequence[int] | None = None) -> ExportedVolume:
    """Export one volume (a :class:`covseg.io.discover` source or a path) and its label from ``labels_dir``;
    ``label_values``: the values that are infection (None: every non-zero value); ``class_values``: (GGO,
    consolidation) values, which also writes the class masks. Raises :class:`CovsegInputError`
    (``"<file>: <reason>"``) when it cannot, leaving the dataset as it was."""
    if class_values is not None:
        if len(class_values) != 2 or class_values[0] == class_values[1]:
            raise ValueError(f"class_values must be two different values (GGO, consolidation), got {class_values}")
        label_values = tuple(class_values)
    volume = read_volume(source)
    label_path = label_for(labels_dir, volume.name)
    if label_path is None:
        tried = ", ".join(f"{n}.nii.gz" for n in label_names_tried(volume.name))
        raise CovsegInputError(Path(labels_dir), f"no label for volume {volume.name!r} (looked for {tried}, also "
                                                 ".nii, .mha, .mhd, .nrrd)")
    label, warnings = read_label(label_path, volume)
    for warning in warnings:
        log.warning("%s: %s", label_path, warning)
    label = np.asarray(label)
    infection = infection_mask(label, label_values)
    classes = None if class_values is None else class_map(label, class_values)
    lung = lung_mask(volume.array, volume.spacing)
    if not lung.any():
        raise CovsegInputError(volume.source_path, "no lung found: nothing to export (is it a chest CT?)")
    chosen = labelled_volume_slices(volume.array, volume.spacing, lung, infection, negatives_per_positive)
    target = split_folder(dataset_dir, split)
    staging = Path(dataset_dir) / f"{STAGING_PREFIX}{split}-{volume.name}"
    shutil.rmtree(staging, ignore_errors=True)
    rows = []
    try:
        parts = ("images", "masks") + (CLASS_FOLDERS if classes is not None else ())
        for part in parts:
            (staging / part).mkdir(parents=True, exist_ok=True)
        for piece in chosen:
            file = f"{volume.name}.z{piece.z:04d}.png"
            write_grey(staging / "images" / file, piece.image)
            write_grey(staging / "masks" / file, piece.mask.astype(np.float32))
            if classes is not None:
                _write_class_masks(staging, file, np.asarray(crop_to_box(classes[piece.z], piece.box)))
            rows.append({"volume": volume.name, "source": str(volume.source_path), "label": str(label_path),
                         "z": piece.z, "file": file, "infection_pixels": int(piece.mask.sum())})
        for part in ("images", "masks", *CLASS_FOLDERS):  # this volume's slices of an earlier export go
            for old in (target / part).glob(f"{volume.name}.z*.png"):
                old.unlink()
        for part in parts:
            (target / part).mkdir(parents=True, exist_ok=True)
            for written in (staging / part).iterdir():
                written.replace(target / part / written.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportedVolume(volume.name, str(volume.source_path), str(label_path), rows)


def write_manifest(dataset_dir: str | Path, split: str, exported: Sequence[ExportedVolume]) -> Path:
    """``slices-<split>.csv``: the rows of the volumes exported now, plus those of other volumes listed before."""
    path = Path(dataset_dir) / f"slices-{split}.csv"
    now = {volume.name for volume in exported}
    rows = []
    if path.is_file():
        with path.open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if row.get("volume") not in now]
    rows += [row for volume in exported for row in volume.rows]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, text.getvalue())
