"""Joint diagnosis (JCS, Wu et al. Fig. 1) of CT volumes: classify every lung slice, decide the patient, segment
only positive patients, explain with activation maps.

Per volume (:func:`diagnose_prepare`, a drop-in for :func:`covseg.engines.inference.volume_step.prepare_volume`, so
:func:`covseg.engines.inference.batch.run_batch` reads ahead, goes on after a bad input and exports atomically):

1. the lung mask, and every lung slice cropped and windowed exactly as the segmenter sees it
   (:func:`lung_crops`);
2. ``P(COVID-19)`` of every lung slice whose lung box is at least ``min_lung_fraction`` of the volume's largest
   (:class:`SliceScorer`, :func:`classified_slices`); a slice is positive at ``score >= slice_threshold``;
3. the patient is positive when the positive slices are more than ``patient_threshold`` (a fraction of the
   classified slices; the paper's count rule, Table IV, with the count scaled to the volume's slice number), and
   ``indeterminate`` when no slice shows ``min_lung_area_cm2`` of lung (e.g. an abdominal CT's lung bases);
4. positive and indeterminate patients are segmented (all lung slices, or with ``segment_gate`` only those scoring
   at least that: step 2's scores are reused, only the slices it left out are scored);
   negative patients are not (empty infection mask, lung mask still written);
5. extra outputs in the volume's folder (:func:`write_diagnosis`): ``diagnosis.json`` (decision, counts,
   thresholds, infection volume, per-slice scores) and ``activation_montage.png`` (activation maps, Eq. 1-2, over
   the strongest slices); for a segmented patient the infection pictures too (:func:`write_segmented_figures`).

The classifier's scores and its slice gate (:class:`ClassifierGate`, also ``covseg infer --gate``) are
:mod:`covseg.engines.inference.slice_scorer`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from covseg.engines.inference.activation import slice_activation
from covseg.engines.inference.outputs import VolumeOutputs, write_figures
from covseg.engines.inference.slice_scorer import ClassifierGate, SliceScorer, crop_key
from covseg.engines.inference.volume_step import prepare_volume
from covseg.io.atomic import atomic_path, atomic_write_text
from covseg.io.read import CTVolume
from covseg.io.strict_json import json_text
from covseg.options import fraction_problem
from covseg.reports.diagnosis import montage_title
from covseg.reports.picks import spaced_top
from covseg.transforms.crop import DEFAULT_MARGIN_MM, crop_to_box, lung_box, margin_px
from covseg.transforms.intensity import window_hu
from covseg.transforms.lung import lung_mask

DIAGNOSIS_FILE = "diagnosis.json"
MONTAGE_FILE = "activation_montage.png"


@dataclass(frozen=True)
class DiagnosisSettings:
    """Thresholds of the joint diagnosis (defaults: the classifier bundle's ``covseg`` section)."""

    slice_threshold: float = 0.5
    patient_threshold: float = 0.5
    """Positive patient: positive slices > this fraction of the lung slices."""
    segment_gate: float | None = None
    """Segment only slices scoring at least this (None: every lung slice of a positive patient)."""
    montage_slices: int = 6
    min_lung_fraction: float = 0.25
    """Classify only the slices whose lung box is at least this fraction of the volume's largest (by area): the
    classifier's training slices show the lungs' middle (on COVID-SemiSeg's 20 volumes every slice's box is >= 0.39
    of its volume's largest), while the few slices at the apex or the base, cut to a tiny box, score high on scans
    without COVID-19. 0 classifies every lung slice."""
    min_lung_area_cm2: float = 120.0
    """The decision is ``indeterminate`` when no slice shows this much lung (both lungs, cm²): the scan does not
    reach the middle of the lungs (an abdominal CT with the lung bases: 97 cm²; chest CTs here 193-263 cm²), where
    the classifier's training slices lie and where its scores mean something. Such a patient is segmented, so the
    reader sees what is there. 0 turns the rule off."""

    def __post_init__(self) -> None:
        """Thresholds are probabilities and fractions: 50 (meant as 50 %) or -1 would silently decide every patient
        one way (never positive; positive with no positive slice)."""
        problem = fraction_problem(slice_threshold=self.slice_threshold, patient_threshold=self.patient_threshold,
                                   segment_gate=self.segment_gate, min_lung_fraction=self.min_lung_fraction)
        if problem:
            raise ValueError(problem)

    @classmethod
    def from_bundle(cls, meta: dict, **given: float | None) -> DiagnosisSettings:
        """Settings from a classifier bundle's ``covseg`` section (``meta``); ``given`` values that are not ``None``
        win (command-line options, request parameters)."""
        names = ("slice_threshold", "patient_threshold", "min_lung_fraction", "min_lung_area_cm2")
        unknown = set(given) - set(names) - {"segment_gate"}
        if unknown:
            raise ValueError(f"unknown diagnosis settings: {sorted(unknown)}")
        values = {n: float(given[n] if given.get(n) is not None else meta.get(n, getattr(cls, n))) for n in names}
        gate = given.get("segment_gate")
        return cls(**values, segment_gate=None if gate is None else float(gate))


def lung_crops(volume: CTVolume, lung: np.ndarray,
               crop_margin_mm: float = DEFAULT_MARGIN_MM) -> tuple[list[int], list[np.ndarray]]:
    """z indices of the lung slices and their windowed lung-box crops (as :func:`infer_volume` makes them)."""
    margin = margin_px(volume.spacing, crop_margin_mm)
    zs = [int(z) for z in np.nonzero(lung.reshape(lung.shape[0], -1).any(axis=1))[0]]
    return zs, [window_hu(crop_to_box(volume.array[z], lung_box(lung[z], margin))) for z in zs]


def classified_slices(crops: Sequence[np.ndarray], min_fraction: float) -> list[int]:
    """Indices of the crops whose area is at least ``min_fraction`` of the largest crop's (the slices classified)."""
    areas = np.asarray([np.asarray(c).size for c in crops], np.float64)
    if areas.size == 0:
        return []
    return [int(i) for i in np.flatnonzero(areas >= float(min_fraction) * areas.max())]


def decide(scores: Sequence[float], settings: DiagnosisSettings, lung_slices: int | None = None,
           largest_lung_cm2: float | None = None) -> dict:
    """The patient decision from the classified slices' scores: counts, thresholds, ``decision`` (``positive``,
    ``negative`` or ``indeterminate``) and ``positive`` (``None`` when indeterminate); ``lung_slices``: all lung
    slices of the volume (default: as many as scores); ``largest_lung_cm2``: the volume's largest lung cross-section
    (``None``: not checked), see :attr:`DiagnosisSettings.min_lung_area_cm2`."""
    s = np.asarray(scores, np.float64)
    n_pos = int((s >= settings.slice_threshold).sum())
    limit = settings.patient_threshold * len(s)
    positive: bool | None = bool(len(s) > 0 and n_pos > limit)
    out = {"positive_slices": n_pos, "classified_slices": int(len(s)),
           "lung_slices": int(len(s) if lung_slices is None else lung_slices),
           "slice_threshold": settings.slice_threshold, "patient_threshold_fraction": settings.patient_threshold,
           "patient_threshold_slices": round(limit, 2)}
    if largest_lung_cm2 is not None:
        out["largest_lung_cm2"] = round(float(largest_lung_cm2), 1)
        if float(largest_lung_cm2) < settings.min_lung_area_cm2:
            positive = None
            out["indeterminate_reason"] = (
                "no lung found" if float(largest_lung_cm2) <= 0.0 else
                f"no slice shows the middle of the lungs (largest lung cross-section {largest_lung_cm2:.0f} cm² < "
                f"{settings.min_lung_area_cm2:g}), where the classifier was trained")
    decision = "indeterminate" if positive is None else ("positive" if positive else "negative")
    return {"decision": decision, "positive": positive, **out}


def largest_lung_area_cm2(lung: np.ndarray, spacing: Sequence[float]) -> float:
    """The largest axial cross-section of ``lung`` (both lungs) in cm²; ``spacing`` is (x, y, z) mm."""
    if lung.size == 0:
        return 0.0
    per_slice = (np.asarray(lung) > 0).reshape(lung.shape[0], -1).sum(axis=1)
    return float(per_slice.max()) * float(spacing[0]) * float(spacing[1]) / 100.0


def _skip_all(crops: Sequence[np.ndarray]) -> list[bool]:
    return [False] * len(crops)


@dataclass
class ClassifiedVolume:
    """Steps 1-3 of one volume: the classified slices (``zs``, their ``crops`` and ``scores``), the ``decision``
    (:func:`decide`), the ``gate`` to segment with (``None``: every lung slice; skip all for a negative patient) and
    the seconds they took."""

    zs: list[int]
    crops: list[np.ndarray]
    scores: np.ndarray
    decision: dict
    gate: Callable[[Sequence[np.ndarray]], Sequence[bool]] | None
    seconds: float


def classify_volume(volume: CTVolume, lung: np.ndarray, scorer: SliceScorer,
                    settings: DiagnosisSettings) -> ClassifiedVolume:
    """Classify the lung slices of ``volume`` (``lung``: its lung mask), decide the patient and make the gate that
    segments what the decision asks for (what ``covseg diagnose`` and the MONAI Label app do before segmenting)."""
    t0 = time.perf_counter()
    lung_zs, lung_slice_crops = lung_crops(volume, lung)
    keep = classified_slices(lung_slice_crops, settings.min_lung_fraction)
    zs, crops = [lung_zs[i] for i in keep], [lung_slice_crops[i] for i in keep]
    scores = scorer(crops) if crops else np.zeros(0)
    seconds = time.perf_counter() - t0
    decision = decide(scores, settings, lung_slices=len(lung_zs),
                      largest_lung_cm2=largest_lung_area_cm2(lung, volume.spacing))
    gate: Callable[[Sequence[np.ndarray]], Sequence[bool]] | None = None
    if decision["decision"] == "negative":
        gate = _skip_all
    elif settings.segment_gate is not None:
        gate = ClassifierGate(scorer, settings.segment_gate,
                              known={crop_key(c): float(v) for c, v in zip(crops, scores)})
    return ClassifiedVolume(zs, crops, scores, decision, gate, seconds)


def make_diagnose_prepare(scorer: SliceScorer, settings: DiagnosisSettings):
    """A ``prepare`` for :func:`covseg.engines.inference.batch.run_batch` doing the joint diagnosis of one volume."""

    def prepare(volume: CTVolume, predictor, out_dir, **kwargs) -> VolumeOutputs:
        lung = kwargs.pop("lung", None)  # run_batch computes it in its reader thread
        lung = np.asarray(lung_mask(volume.array, volume.spacing) if lung is None else lung, np.uint8)
        classified = classify_volume(volume, lung, scorer, settings)
        zs, crops, scores, decision = classified.zs, classified.crops, classified.scores, classified.decision
        kwargs["gate"] = classified.gate
        item = prepare_volume(volume, predictor, out_dir, lung=lung, **kwargs)
        item.report.timing_s["classify"] = round(classified.seconds, 3)
        item.started -= classified.seconds  # the volume's total (report.json, summary.csv) includes the classifier
        item.report.diagnosis = {k: decision[k] for k in ("decision", "positive_slices", "classified_slices",
                                                          "largest_lung_cm2") if k in decision}
        gap = max(1, (zs[-1] - zs[0] + 1) // max(settings.montage_slices, 1)) if zs else 1
        shown = spaced_top(zs, scores, settings.montage_slices, gap)
        at = {z: i for i, z in enumerate(zs)}
        top = montage_sources(volume, lung, item.result.infection, [(z, crops[at[z]], float(scores[at[z]]))
                                                                     for z in shown])
        item.extras["diagnosis"] = {
            **decision,
            "segmented": decision["decision"] != "negative",
            "segmented_slices": int(item.result.predicted.sum()),
            "infection_ml": item.report.infection_ml,
            "lung_involvement_percent": item.report.lung_involvement_percent,
            "settings": asdict(settings),
            "montage_slices": shown,
            "montage_min_gap": gap,
            "slices": [{"slice": z, "score": round(float(s), 5)} for z, s in zip(zs, scores)],
        }
        item.extras["montage"] = (scorer, top)
        return item

    return prepare


def montage_sources(volume: CTVolume, lung: np.ndarray, infection: np.ndarray,
                    top: Sequence[tuple[int, np.ndarray, float]],
                    crop_margin_mm: float = DEFAULT_MARGIN_MM) -> list[tuple]:
    """What the montage needs of each ``(z, crop, score)``, in one field of view, the volume's lung box: the
    windowed slice, its infection mask and the slice's crop box within the view (see
    :mod:`covseg.reports.activation_montage`), and the view's pixel size ``(row, column)`` in mm (the scale bar)."""
    margin = margin_px(volume.spacing, crop_margin_mm)
    view = lung_box(lung, margin)  # [z, y, x]: the union of every slice's lung
    if view is None:
        return []
    vy0, _, vx0, _ = view
    pixel_mm = (float(volume.spacing[1]), float(volume.spacing[0]))  # spacing is (x, y, z)
    sources = []
    for z, crop, score in top:
        y0, y1, x0, x1 = lung_box(lung[z], margin)
        sources.append((z, score, crop, window_hu(crop_to_box(volume.array[z], view)),
                        crop_to_box(infection[z], view), (y0 - vy0, y1 - vy0, x0 - vx0, x1 - vx0), pixel_mm))
    return sources


def activation_montage(scorer: SliceScorer, sources: Sequence[tuple], title: str | None = None) -> bytes:
    """PNG bytes of the montage: each source's activation map (Eq. 1-2, on the crop the classifier scored) placed
    over its crop in the view, beside the segmentation's contour, under ``title``."""
    from covseg.reports.activation_montage import ActivationPanel, activation_montage_png

    panels = []
    for z, score, crop, image, mask, box, pixel_mm in sources:
        am, _ = slice_activation(scorer.network, crop, scorer.image_size)
        heat = np.full(image.shape, np.nan, np.float32)
        heat[box[0]:box[1], box[2]:box[3]] = am
        panels.append(ActivationPanel(z, score, image, heat, mask, box, pixel_mm))
    return activation_montage_png(panels, title=title)


def write_diagnosis(folder: Path, item: VolumeOutputs) -> dict[str, str]:
    """Extra writer (:class:`covseg.engines.inference.outputs.ExportOptions`): ``diagnosis.json`` and the montage
    PNG."""
    files: dict[str, str] = {}
    diagnosis = item.extras.get("diagnosis")
    if diagnosis is None:
        return files
    atomic_write_text(folder / DIAGNOSIS_FILE, json_text({"name": item.report.name, **diagnosis}, indent=1))
    files["diagnosis"] = DIAGNOSIS_FILE
    montage = item.extras.get("montage")
    if montage is not None:
        scorer, sources = montage
        data = activation_montage(scorer, sources, montage_title(item.report.name, diagnosis, len(sources)))
        with atomic_path(folder / MONTAGE_FILE) as tmp:
            Path(tmp).write_bytes(data)
        files["activation_montage"] = MONTAGE_FILE
    return files


def write_segmented_figures(folder: Path, item: VolumeOutputs) -> dict[str, str]:
    """Extra writer: the infection pictures (:func:`covseg.engines.inference.outputs.write_figures`) of a segmented
    patient; nothing for a negative one, whose infection mask is empty."""
    if not (item.extras.get("diagnosis") or {}).get("segmented"):
        return {}
    return write_figures(folder, item)
