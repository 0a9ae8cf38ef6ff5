"""Score a folder of 3D prediction masks against reference labels the way ``covseg infer --labels`` scores its own.

The predictions are volume files (``<case>.nii.gz``, ``.nii``, ``.mha``, ``.mhd``, ``.nrrd``: nnU-Net's, any
tool's) or ``covseg infer``'s output folder (``<volume>/infection_mask.nii.gz``, with ``infection_labels.nii.gz``
for per-class scores). Each is matched to its label by :func:`covseg.io.labels.label_for` (also without a naming tag
or nnU-Net's ``_0000``), read onto the prediction's grid by :func:`covseg.io.labels.read_label` and scored by
:func:`covseg.reports.label_scores.score_label`: the prediction binarised as > 0 (one that looks like a probability map
with a warning), the label's values as
:class:`~covseg.reports.label_scores.LabelValues` say. MAE is that of the binary mask, its error rate (infer's
report scores its probability map). One volume's failure is its entry's ``error``; the others are scored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from covseg.io.errors import CovsegInputError
from covseg.io.labels import (
    LABEL_SUFFIXES,
    label_for,
    label_names_tried,
    read_label,
    read_mask,
    shared_label_note,
    volume_stem,
)
from covseg.metrics.folders import PRED_SUFFIXES, natural_key
from covseg.reports.label_scores import LabelValues, score_label

__all__ = ["INFER_CLASSES", "INFER_MASK", "VolumePrediction", "find_predictions", "prediction_kind", "score_volume",
           "score_volumes"]

INFER_MASK = "infection_mask.nii.gz"
INFER_CLASSES = "infection_labels.nii.gz"
_CLASSES = 3  # background, GGO, consolidation: the prediction's 0, 1, 2 with --label-classes


@dataclass(frozen=True)
class VolumePrediction:
    """One volume's prediction: ``mask`` (> 0 is infection); ``infer_folder``: from a ``covseg infer`` volume
    folder, with ``classes``, its ``infection_labels.nii.gz``, for a multi-class model; ``problem``: why it cannot be
    scored (a name given twice)."""

    name: str
    mask: Path
    infer_folder: bool = False
    classes: Path | None = None
    problem: str | None = None


def _entries(pred_dir: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """The 2D maps, volume files and ``covseg infer`` volume folders of ``pred_dir`` (hidden entries left out)."""
    maps, files, folders = [], [], []
    for p in pred_dir.iterdir():
        if p.name.startswith("."):
            continue
        if p.is_dir():
            if (p / INFER_MASK).is_file():
                folders.append(p)
        elif p.suffix.lower() in PRED_SUFFIXES:
            maps.append(p)
        elif volume_stem(p) is not None:
            files.append(p)
    return maps, files, folders


def prediction_kind(pred_dir: str | Path) -> str:
    """``"volumes"`` when ``pred_dir`` holds volume files or ``covseg infer`` volume folders, ``"maps"`` for 2D
    prediction maps (and for anything that is not a folder: the 2D scorer says so). A folder holding both kinds, or
    neither, raises a one-line ``ValueError`` (a usage error)."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        return "maps"
    try:
        maps, files, folders = _entries(pred_dir)
    except OSError as exc:
        raise ValueError(f"{pred_dir}: cannot be read ({exc.strerror or exc})") from None
    volumes = sorted(files + folders)
    if maps and volumes:
        raise ValueError(f"{pred_dir}: holds both 2D prediction maps ({sorted(maps)[0].name}) and volumes "
                         f"({volumes[0].name}): give a folder of one kind")
    if not maps and not volumes:
        raise ValueError(f"{pred_dir}: no predictions: neither 2D maps ({', '.join(PRED_SUFFIXES)}) nor volumes "
                         f"({', '.join(LABEL_SUFFIXES)}) nor covseg infer volume folders (<volume>/{INFER_MASK})")
    return "volumes" if volumes else "maps"


def find_predictions(pred_dir: str | Path) -> list[VolumePrediction]:
    """The volume predictions in ``pred_dir``, in natural order of their names: each volume file ``<case>.<ext>``,
    and each ``covseg infer`` folder ``<volume>/`` (its ``infection_mask.nii.gz``, and ``infection_labels.nii.gz``
    when there). A name given twice (``case.nii.gz`` beside ``case.mha`` or ``case/``) is one prediction whose
    ``problem`` names the files."""
    pred_dir = Path(pred_dir)
    _, files, folders = _entries(pred_dir)
    found: dict[str, list[VolumePrediction]] = {}
    for f in files:
        found.setdefault(volume_stem(f) or f.name, []).append(VolumePrediction(volume_stem(f) or f.name, f))
    for d in folders:
        classes = d / INFER_CLASSES
        found.setdefault(d.name, []).append(VolumePrediction(d.name, d / INFER_MASK, True,
                                                             classes if classes.is_file() else None))
    out = []
    for name in sorted(found, key=natural_key):
        same = found[name]
        if len(same) > 1:
            shown = ", ".join(sorted(str(p.mask.relative_to(pred_dir)) for p in same))
            out.append(VolumePrediction(name, same[0].mask, problem=f"several predictions of volume {name}: {shown}"))
        else:
            out.append(same[0])
    return out


def _class_map(pred: VolumePrediction, mask: np.ndarray, read: Callable[[Path], np.ndarray]) -> np.ndarray | None:
    """The prediction's classes with ``--label-classes``: a ``covseg infer`` folder's ``infection_labels.nii.gz``
    (None for a binary model's folder, scored as infer scores it), else the prediction file's own values."""
    if pred.infer_folder:
        return None if pred.classes is None else read(pred.classes)
    return mask


def _check_classes(classes: np.ndarray, path: Path) -> np.ndarray:
    held = np.unique(classes)
    if held.min() < 0 or held.max() >= _CLASSES or not np.all(held == np.round(held)):
        shown = ", ".join(f"{v:g}" for v in held[:8])
        raise CovsegInputError(path, f"prediction holds values {shown}: with --label-classes a prediction's classes "
                                     "are 0 background, 1 GGO, 2 consolidation")
    return classes.astype(np.int64)


def _not_a_mask(array: np.ndarray) -> str | None:
    """Why ``array`` looks like a probability map rather than a mask (fractional values; or more distinct values
    than background and two classes, as the uint8 0-255 map of ``covseg infer --save-prob``), else None."""
    if np.issubdtype(array.dtype, np.floating) and not np.all(array == np.round(array)):
        return "holds fractional values (a probability map?)"
    held = np.unique(array)
    if held.size > _CLASSES:
        return (f"holds {held.size} different values from {held[0]:g} to {held[-1]:g} (a probability map, e.g. "
                "covseg infer's 0-255 infection_prob.nii.gz?)")
    return None


def score_volume(pred: VolumePrediction, gt_dir: str | Path, values: LabelValues | None = None) -> dict:
    """One volume's entry: ``name``, ``pred``, ``label``, ``status`` ``"ok"``, ``metrics`` (and ``class_metrics``,
    ``label_classes`` with per-class scores), ``label_values``, ``warnings``. Raises ``CovsegInputError("<path>:
    <reason>")`` for a prediction or label that cannot be read, a missing label or one on another grid."""
    if pred.problem:
        raise CovsegInputError(pred.mask, pred.problem)
    label_path = label_for(gt_dir, pred.name)
    if label_path is None:
        tried = ", ".join(f"{n}.nii.gz" for n in label_names_tried(pred.name))
        raise CovsegInputError(pred.mask, f"no label in {gt_dir} (looked for {tried}, or .nii / .mha / .mhd / .nrrd)")
    volume = read_mask(pred.mask)
    try:
        label, warnings = read_label(label_path, volume)
    except CovsegInputError as exc:  # "the input" there is the prediction: name it
        raise CovsegInputError(f"{exc} (prediction {pred.mask})") from None
    classes = None
    if values is not None and values.classes is not None:

        def read(path: Path) -> np.ndarray:
            grid = read_mask(path)
            if grid.array.shape != volume.array.shape:
                raise CovsegInputError(path, f"class map shape {grid.array.shape} differs from the mask's "
                                             f"{volume.array.shape}")
            return grid.array

        found = _class_map(pred, volume.array, read)
        classes = None if found is None else _check_classes(found, pred.classes or pred.mask)
    scored = score_label(label, volume.array > 0, classes=classes, n_classes=_CLASSES if classes is not None else 1,
                         values=values, label_path=str(label_path))
    entry = {"name": pred.name, "pred": str(pred.mask), "label": str(label_path), "status": "ok",
             "metrics": scored.metrics, "label_values": scored.values}
    if scored.class_metrics is not None:
        entry.update(class_metrics=scored.class_metrics, label_classes=scored.classes,
                     class_map=str(pred.classes or pred.mask))
    problem = _not_a_mask(volume.array)
    if problem:
        warnings.append(f"{pred.mask.name} {problem}: scored as > 0 (threshold it into a mask first)")
    shared = shared_label_note(pred.name, label_path)
    entry["warnings"] = [*warnings, *scored.warnings, *([shared] if shared else [])]
    return entry


def score_volumes(pred_dir: str | Path, gt_dir: str | Path, values: LabelValues | None = None,
                  on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Score every prediction of ``pred_dir`` (:func:`find_predictions`) against its label in ``gt_dir``: one entry
    per volume (:func:`score_volume`), or ``{"name", "pred", "status": "error", "error": "<path>: <reason>"}`` for
    one that failed. ``on_result`` is called with each entry as it is done."""
    out = []
    for pred in find_predictions(pred_dir):
        try:
            entry = score_volume(pred, gt_dir, values)
        except (CovsegInputError, ValueError, RuntimeError, OSError) as exc:  # RuntimeError: SimpleITK's
            message = str(exc) if isinstance(exc, CovsegInputError) else f"{pred.mask}: {exc}"
            entry = {"name": pred.name, "pred": str(pred.mask), "status": "error", "error": " ".join(message.split())}
        if on_result is not None:
            on_result(entry)
        out.append(entry)
    return out
