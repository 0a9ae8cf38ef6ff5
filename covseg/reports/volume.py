"""Per-volume report: lung and infection volumes, involvement, slice counts, scores against a label, warnings.

Volumes are voxel counts times the voxel volume (``prod(spacing) / 1000`` mL). Definitions:

* ``lung_ml`` / ``right_lung_ml`` / ``left_lung_ml``: voxels of the lung label map (1 right, 2 left);
* ``infection_ml``: voxels of the written infection mask (which may reach a small margin outside the lung mask,
  see :mod:`covseg.engines.inference.volume`); ``right_infection_ml`` / ``left_infection_ml``: infection inside each
  lung;
* ``lung_involvement_percent``: ``100 * |infection ∩ lung| / |lung|`` (0 when there is no lung);
* ``lung_slices``: axial slices holding any lung voxel; ``infected_slices``: slices holding any infection voxel;
  ``predicted_slices``: slices the network actually ran on (lung slices kept by the optional gate, which
  ``model["gate"]`` then names, with its share of the ``predict`` time in ``timing_s["gate"]``);
* ``severity``: CT severity score per lung and per zone (thirds of each lung along z, not lobes), see
  :mod:`covseg.reports.severity`;
* ``metrics`` (only with a label; label > 0 = infection, or the label values given): Dice, sensitivity,
  specificity, precision, IoU of the infection mask over the whole volume, and MAE of the probability map, as
  :func:`covseg.metrics.binary_scores` defines them (empty-mask conventions included); ``label_values`` the label
  values scored as infection and ``label_classes`` those of the per-class scores
  (:mod:`covseg.reports.label_scores`).

Per-slice rows (``slices.csv``): ``slice`` (z index of the written arrays' LPS order, 0 = most inferior),
``lung_px``, ``right_px``, ``left_px``, ``infection_px``, ``mean_prob`` (mean infection probability over the
slice's lung pixels, empty when the slice has no lung) and ``predicted`` (1 if the network ran on the slice).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from covseg.io.strict_json import json_text
from covseg.reports.counts import SliceCounts, slice_counts
from covseg.reports.label_scores import LabelValues, class_names, score_label
from covseg.reports.severity import compute_severity

__all__ = [
    "FEW_LUNG_SLICES",
    "FEW_LUNG_FRACTION",
    "SMALL_LUNG_ML",
    "SLICE_COLUMNS",
    "VolumeReport",
    "build_volume_report",
    "class_columns",
    "lung_warnings",
    "resolution_warnings",
    "slice_rows",
    "slices_csv_text",
]

FEW_LUNG_SLICES = 5
"""Fewer lung slices than this (or than :data:`FEW_LUNG_FRACTION` of the slices) -> a warning."""
FEW_LUNG_FRACTION = 0.25
SMALL_LUNG_ML = 1000.0
"""A lung volume below this (both lungs, mL) -> "partial scan?" warning (an adult's lungs hold 3-6 L)."""
COARSE_PIXEL_MM = 2.0
"""In-plane pixels coarser than this (mm) -> a warning: the models were trained on diagnostic chest CT (under 1 mm),
and on a 4 mm scan without COVID-19 Inf-Net marks 9 % of the lung (blurred vessels; the model cards)."""
SLICE_COLUMNS = ("slice", "lung_px", "right_px", "left_px", "infection_px", "mean_prob", "predicted")


@dataclass
class VolumeReport:
    """Everything ``report.json`` holds for one volume (see the module docstring for definitions)."""

    name: str
    source: str
    shape_zyx: tuple[int, int, int]
    spacing_xyz_mm: tuple[float, float, float]
    voxel_ml: float
    lung_ml: float
    right_lung_ml: float
    left_lung_ml: float
    infection_ml: float
    right_infection_ml: float
    left_infection_ml: float
    lung_involvement_percent: float
    n_slices: int
    lung_slices: int
    infected_slices: int
    predicted_slices: int
    status: str = "ok"
    model: dict = field(default_factory=dict)
    class_ml: dict[str, float] | None = None
    class_volumes: dict[str, dict[str, float]] | None = None  # per class: ml, lung_percent, right_ml, left_ml
    class_metrics: dict[str, dict[str, float]] | None = None  # per class vs a 0/1/2 label: dice ... mae
    label: str | None = None
    label_values: list[int | float] | None = None  # the label values scored as infection
    label_classes: dict[str, int] | None = None  # the label value of each class in class_metrics
    metrics: dict[str, float] | None = None
    warnings: list[str] = field(default_factory=list)
    timing_s: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    severity: dict | None = None
    diagnosis: dict | None = None
    """``covseg diagnose``'s decision in brief (``decision``, positive and classified slices, largest lung cm²);
    the volume's diagnosis.json has the rest. ``None`` for ``covseg infer``."""
    request: dict | None = None
    """What the outputs were made from (input files, model as it ran, optional outputs, labels folder,
    post-processing): :func:`covseg.engines.inference.resume.volume_request`, which ``--continue`` compares."""

    @classmethod
    def from_dict(cls, d: dict) -> VolumeReport:
        """The report of a ``report.json`` dict (:meth:`to_dict`'s inverse; keys it does not know are dropped)."""
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in d.items() if k in known}
        values["shape_zyx"] = tuple(values["shape_zyx"])
        values["spacing_xyz_mm"] = tuple(values["spacing_xyz_mm"])
        return cls(**values)

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict."""
        d = asdict(self)
        d["shape_zyx"] = list(self.shape_zyx)
        d["spacing_xyz_mm"] = list(self.spacing_xyz_mm)
        return d

    def to_json(self) -> str:
        """``report.json`` text."""
        return json_text(self.to_dict()) + "\n"


def lung_warnings(lung_slices: int, n_slices: int, lung_ml: float) -> list[str]:
    """Warnings about lung coverage: none found, few slices, small volume."""
    if lung_slices == 0:
        return ["no lung found: no infection can be segmented in this volume (is it a chest CT?)"]
    out = []
    if lung_slices < FEW_LUNG_SLICES or lung_slices < FEW_LUNG_FRACTION * n_slices:
        out.append(f"only {lung_slices} of {n_slices} slices contain lung: the scan covers part of the lungs "
                   "at most")
    if lung_ml < SMALL_LUNG_ML:
        out.append(f"lung volume is only {lung_ml:.0f} mL: partial scan or lung mask failure?")
    return out


def resolution_warnings(spacing_xyz: Sequence[float]) -> list[str]:
    """A warning when the in-plane pixels are coarser than :data:`COARSE_PIXEL_MM`."""
    pixel = max(float(spacing_xyz[0]), float(spacing_xyz[1]))
    if pixel <= COARSE_PIXEL_MM:
        return []
    return [f"in-plane pixels of {pixel:.1f} mm, far coarser than the chest CT the models were trained on (under "
            "1 mm): blurred vessels tend to be marked as infection"]


def _per_slice_count(mask: np.ndarray) -> np.ndarray:
    return np.count_nonzero(mask.reshape(mask.shape[0], -1), axis=1)


def slice_rows(lung: np.ndarray, infection: np.ndarray, prob: np.ndarray | None = None,
               predicted: Sequence[bool] | np.ndarray | None = None, classes: np.ndarray | None = None,
               n_classes: int = 1, counts: SliceCounts | None = None) -> list[dict]:
    """One dict per axial slice with :data:`SLICE_COLUMNS` (``mean_prob`` is ``None`` without lung); with a
    multi-class label map (``classes``, ``n_classes`` > 1) also ``<class>_px`` per foreground class
    (:func:`class_columns`). ``counts``: :func:`covseg.reports.counts.slice_counts` of ``lung`` and ``infection``
    when already taken."""
    nz = lung.shape[0]
    counts = counts if counts is not None else slice_counts(lung, infection)
    right, left, lung_px, inf_px = counts.right, counts.left, counts.lung, counts.infection
    means: list[float | None] = [None] * nz
    if prob is not None:
        for z in np.nonzero(lung_px)[0]:
            inside = lung[z] > 0
            means[z] = float(prob[z][inside].mean(dtype=np.float64))
    pred = np.zeros(nz, bool) if predicted is None else np.asarray(predicted, bool)
    per_class = {}
    if classes is not None and n_classes > 1:
        per_class = {column: _per_slice_count(classes == k)
                     for k, column in enumerate(class_columns(n_classes), start=1)}
    return [
        {"slice": z, "lung_px": int(lung_px[z]), "right_px": int(right[z]), "left_px": int(left[z]),
         "infection_px": int(inf_px[z]), "mean_prob": means[z], "predicted": int(pred[z]),
         **{column: int(pixels[z]) for column, pixels in per_class.items()}}
        for z in range(nz)
    ]


def class_columns(n_classes: int) -> list[str]:
    """The per-slice pixel columns of the foreground classes: ``ggo_px``, ``consolidation_px`` for the 3-class
    models (``class<k>_px`` otherwise)."""
    return [f"{name}_px" for name in class_names(n_classes)[1:]]


def slices_csv_text(rows: Sequence[dict]) -> str:
    """``slices.csv`` text (``mean_prob`` with 4 decimals, empty when undefined), then any per-class columns."""
    extra = [k for k in (rows[0] if rows else {}) if k not in SLICE_COLUMNS]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*SLICE_COLUMNS, *extra])
    for r in rows:
        mp = r["mean_prob"]
        writer.writerow([r["slice"], r["lung_px"], r["right_px"], r["left_px"], r["infection_px"],
                         "" if mp is None else f"{mp:.4f}", r["predicted"], *(r[k] for k in extra)])
    return buf.getvalue()


def _ml(count: int, voxel_ml: float) -> float:
    return round(float(count) * voxel_ml, 3)


def _class_volumes(classes: np.ndarray, lung: np.ndarray, n_classes: int, voxel_ml: float,
                   lung_n: int) -> dict[str, dict[str, float]]:
    """Per foreground class: volume (mL), share of the lung (%), and its volume in the right and left lung."""
    names = class_names(n_classes)
    out = {}
    for k in range(1, n_classes):
        in_class = classes == k
        right, left = int(np.count_nonzero(in_class & (lung == 1))), int(np.count_nonzero(in_class & (lung == 2)))
        out[names[k]] = {"ml": _ml(int(np.count_nonzero(in_class)), voxel_ml),
                         "lung_percent": round(100.0 * (right + left) / lung_n, 3) if lung_n else 0.0,
                         "right_ml": _ml(right, voxel_ml), "left_ml": _ml(left, voxel_ml)}
    return out


def build_volume_report(name: str, source: str, lung: np.ndarray, infection: np.ndarray,
                        spacing_xyz: Sequence[float], *, prob: np.ndarray | None = None,
                        label: np.ndarray | None = None, label_path: str | None = None,
                        classes: np.ndarray | None = None, n_classes: int = 1,
                        predicted_slices: int | None = None, warnings: Sequence[str] = (),
                        model: dict | None = None, timing_s: dict[str, float] | None = None,
                        counts: SliceCounts | None = None, label_values: LabelValues | None = None) -> VolumeReport:
    """Compute a :class:`VolumeReport` from the output arrays (all ``[z, y, x]`` of one shape).

    ``lung``: 0/1 right/2 left; ``infection``: mask (non-zero = infection); ``prob``: infection probability in
    [0, 1] (for MAE); ``label``: reference (non-zero = infection, or ``label_values``: which values are infection
    and, for the per-class scores, GGO and consolidation; :func:`covseg.reports.label_scores.score_label`);
    ``classes``: label map 0..n_classes-1 of a multi-class model (volumes per class in ``class_ml``); ``counts``:
    :func:`covseg.reports.counts.slice_counts` of ``lung`` and ``infection`` when already taken.
    """
    spacing = tuple(float(s) for s in spacing_xyz)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    nz = int(lung.shape[0])
    counts = counts if counts is not None else slice_counts(lung, infection)
    right_n, left_n = int(counts.right.sum()), int(counts.left.sum())
    lung_n = right_n + left_n
    inf_n = int(counts.infection.sum())
    inf_right, inf_left = int(counts.right_infection.sum()), int(counts.left_infection.sum())
    lung_slices = int(np.count_nonzero(counts.lung))
    infected_slices = int(np.count_nonzero(counts.infection))
    lung_ml = _ml(lung_n, voxel_ml)
    warn = list(warnings) + lung_warnings(lung_slices, nz, lung_ml)
    if lung_slices:
        warn += resolution_warnings(spacing)
    class_ml = class_volumes = None
    if classes is not None and n_classes > 1:
        class_counts = np.bincount(classes.ravel(), minlength=n_classes)
        class_ml = {str(k): _ml(int(class_counts[k]), voxel_ml) for k in range(1, n_classes)}
        class_volumes = _class_volumes(classes, lung, n_classes, voxel_ml, lung_n)
    scored = None
    if label is not None:
        scored = score_label(label, infection, prob=prob, classes=classes, n_classes=n_classes, values=label_values,
                             label_path=label_path)
        warn += scored.warnings
    return VolumeReport(
        name=name, source=str(source), shape_zyx=tuple(int(s) for s in lung.shape), spacing_xyz_mm=spacing,
        voxel_ml=voxel_ml, lung_ml=lung_ml, right_lung_ml=_ml(right_n, voxel_ml), left_lung_ml=_ml(left_n, voxel_ml),
        infection_ml=_ml(inf_n, voxel_ml), right_infection_ml=_ml(inf_right, voxel_ml),
        left_infection_ml=_ml(inf_left, voxel_ml),
        lung_involvement_percent=round(100.0 * (inf_right + inf_left) / lung_n, 3) if lung_n else 0.0,
        n_slices=nz, lung_slices=lung_slices, infected_slices=infected_slices,
        predicted_slices=lung_slices if predicted_slices is None else int(predicted_slices),
        model=dict(model or {}), class_ml=class_ml, class_volumes=class_volumes,
        class_metrics=None if scored is None else scored.class_metrics, label=label_path,
        label_values=None if scored is None else scored.values,
        label_classes=None if scored is None else scored.classes,
        metrics=None if scored is None else scored.metrics, warnings=warn,
        timing_s={k: round(float(v), 3) for k, v in (timing_s or {}).items() if math.isfinite(v)},
        severity=compute_severity(lung, infection, counts).to_dict(),
    )
