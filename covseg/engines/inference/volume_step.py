"""One volume's step between reading and export: infer it, score it against its label, build its report.

:func:`prepare_volume` returns the :class:`covseg.engines.inference.outputs.VolumeOutputs` that
:func:`covseg.engines.inference.export.export_volume` writes; :func:`covseg.engines.inference.batch.run_batch` calls
it (or a replacement such as the joint diagnosis of :mod:`covseg.engines.inference.diagnose`) once per volume.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from covseg.engines.inference.export import export_volume
from covseg.engines.inference.outputs import ExportOptions, VolumeOutputs
from covseg.engines.inference.pictures_job import start_pictures
from covseg.engines.inference.predictor import SlicePredictor
from covseg.engines.inference.volume import (
    LUNG_MARGIN_MM,
    THRESHOLD,
    Gate,
    Handler,
    InfectionPostprocessing,
    Progress,
    infer_volume,
)
from covseg.io.errors import CovsegInputError
from covseg.io.labels import label_for, read_label, shared_label_note
from covseg.io.read import CTVolume
from covseg.reports.counts import slice_counts
from covseg.reports.label_scores import LabelValues
from covseg.reports.volume import VolumeReport, build_volume_report, slice_rows

__all__ = ["prepare_volume", "process_volume"]


def prepare_volume(volume: CTVolume, predictor: SlicePredictor, out_dir: str | Path, *,
                   label_path: str | Path | None = None, labels_dir: str | Path | None = None,
                   gate: Gate | None = None, model_info: dict | None = None, handlers: Sequence[Handler] = (),
                   threshold: float = THRESHOLD, lung_margin_mm: float = LUNG_MARGIN_MM,
                   timing_s: dict[str, float] | None = None, lung: np.ndarray | None = None,
                   postprocessing: InfectionPostprocessing | None = None,
                   progress: Progress | None = None, pictures: bool = False,
                   label_values: LabelValues | None = None) -> VolumeOutputs:
    """Infer ``volume``, score it against its label (if any) and build its report: what :func:`export_volume` needs.

    ``lung``: its lung mask when already computed (``timing_s`` then holds that step's seconds). ``pictures``: start
    drawing the volume's pictures (:func:`covseg.engines.inference.pictures_job.start_pictures`) as soon as the
    inference is done, so that they are drawn while the report is built and the masks are written. ``label_values``:
    which values of the label are scored as infection (and per class); None: every non-zero value."""
    timing_s = timing_s or {}
    model_info = model_info or {}
    t0 = time.perf_counter()
    started = t0 - sum(timing_s.get(k, 0.0) for k in ("read", "lung_mask"))
    result = infer_volume(volume, predictor, lung=lung, gate=gate, threshold=threshold,
                          lung_margin_mm=lung_margin_mm, handlers=handlers, postprocessing=postprocessing,
                          progress=progress)
    counts = slice_counts(result.lung, result.infection)  # for the rows and the report
    rows = slice_rows(result.lung, result.infection, result.prob, result.predicted, result.classes,
                      result.n_classes, counts=counts)
    drawing = start_pictures(volume, result, rows) if pictures else None
    warnings = list(volume.warnings)
    if model_info and not model_info.get("trained", True):
        warnings.append(f"model {model_info.get('name', '?')!r} has no trained weights: the infection outputs are "
                        "not meaningful (lung figures are)")
    label = None
    if label_path is None and labels_dir is not None:
        label_path = label_for(labels_dir, volume.name)  # also without a naming tag or nnU-Net's _0000
        if label_path is None:
            warnings.append(f"no label {Path(labels_dir) / (volume.name + '.nii.gz')}: no scores")
        elif note := shared_label_note(volume.name, label_path):
            warnings.append(note)
    if label_path is not None:
        try:
            label, label_warnings = read_label(label_path, volume)
            warnings += label_warnings
        except CovsegInputError as exc:
            warnings.append(f"label ignored: {exc}")
            label_path = None
    t1 = time.perf_counter()
    timing = {**timing_s, **result.timing_s}
    report = build_volume_report(
        volume.name, str(volume.source_path), result.lung, result.infection, volume.spacing, prob=result.prob,
        label=label, label_path=None if label_path is None else str(label_path), classes=result.classes,
        n_classes=result.n_classes, predicted_slices=int(result.predicted.sum()), warnings=warnings,
        model=model_info, timing_s=timing, counts=counts, label_values=label_values,
    )
    report.timing_s["report"] = round(time.perf_counter() - t1, 3)
    report.timing_s["compute"] = round(time.perf_counter() - t0, 3)
    return VolumeOutputs(volume, result, report, rows, Path(out_dir) / volume.name, started, pictures=drawing)


def process_volume(volume: CTVolume, predictor: SlicePredictor, out_dir: str | Path, *,
                   label_path: str | Path | None = None, labels_dir: str | Path | None = None,
                   gate: Gate | None = None, save_prob: bool = False, model_info: dict | None = None,
                   handlers: Sequence[Handler] = (), threshold: float = THRESHOLD,
                   lung_margin_mm: float = LUNG_MARGIN_MM, timing_s: dict[str, float] | None = None,
                   write: bool = True) -> VolumeReport:
    """Infer, report and (``write``) export one volume under ``<out_dir>/<volume.name>/``; return its report."""
    item = prepare_volume(volume, predictor, out_dir, label_path=label_path, labels_dir=labels_dir, gate=gate,
                          model_info=model_info, handlers=handlers, threshold=threshold,
                          lung_margin_mm=lung_margin_mm, timing_s=timing_s)
    if write:
        export_volume(item, ExportOptions(save_prob=save_prob))
    return item.report
