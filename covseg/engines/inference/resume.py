"""Resuming a batch (``covseg infer --continue``): which inputs already have a complete result in the output folder.

Each volume's ``report.json`` is written last (:mod:`covseg.engines.inference.export`) and its ``request`` entry
records what was asked for: the input (its identity, and its files' count, bytes and latest modification time), the
model as it ran (weights, version, image size, flips, precision, backend, gate), the optional outputs, the labels
folder and the label values given (``--label-values``, ``--label-classes``), the post-processing and any other
settings (``covseg diagnose``: its thresholds). With ``skip_done``
(:func:`covseg.engines.inference.batch.run_batch`) an input is not computed again when its folder's report is ``ok``,
its request equals this run's and every file the report lists is still there. Anything else (another model or
precision, other outputs, an input file changed since, a file deleted) is computed again and replaces the folder.
A changed label file under the same labels folder is not noticed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from covseg.engines.inference.outputs import ExportOptions
from covseg.io.naming import source_key
from covseg.io.source import VolumeSource
from covseg.reports.batch import VolumeResult
from covseg.reports.label_scores import LabelValues
from covseg.reports.volume import VolumeReport

__all__ = ["earlier_result", "input_fingerprint", "volume_request"]

_RUN_ONLY = ("device", "compiled")
"""Model entries that say how a run went, not what it computed: left out of the request."""


def input_fingerprint(src: VolumeSource) -> dict:
    """The input's identity and its files' count, total bytes and latest modification time (ns); ``None`` values
    for files that cannot be stat'ed (the input then fails on reading anyway)."""
    files = list(src.files) if src.files else [Path(src.path)]
    try:
        stats = [os.stat(f) for f in files]
    except OSError:
        return {"key": source_key(src), "files": len(files), "bytes": None, "mtime_ns": None}
    return {"key": source_key(src), "files": len(files), "bytes": sum(s.st_size for s in stats),
            "mtime_ns": max(s.st_mtime_ns for s in stats)}


def volume_request(src: VolumeSource, model_info: dict, options: ExportOptions,
                   labels_dir: str | Path | None, postprocessing: object, settings: dict | None = None,
                   label_values: LabelValues | None = None) -> dict:
    """What one volume's outputs are made from (JSON-serialisable; compared by equality); ``settings``: the rest
    of what decides them (``covseg diagnose``: its thresholds); ``label_values`` is recorded only when given, so that
    the requests of earlier runs without it stay equal."""
    outputs = {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name != "writers"}
    outputs["writers"] = [getattr(w, "__qualname__", type(w).__name__) for w in options.writers]
    if src.files and options.dicom_seg is not False:  # a DICOM series' SEG comes with its SR since covseg 2026-12-07:
        outputs["dicom_sr"] = True  # a folder of an earlier version (SEG alone) is made again, other requests unchanged
    post = dataclasses.asdict(postprocessing) if dataclasses.is_dataclass(postprocessing) else {}
    given = {} if label_values is None else {"label_values": dataclasses.asdict(label_values)}
    return json.loads(json.dumps({
        "input": input_fingerprint(src),
        "model": {k: v for k, v in model_info.items() if k not in _RUN_ONLY},
        "outputs": outputs,
        "labels_dir": None if labels_dir is None else str(Path(labels_dir).resolve()),
        **given,
        "postprocessing": {"type": type(postprocessing).__name__, **post},
        "settings": settings,
    }, default=str))


def earlier_result(folder: Path, src: VolumeSource, request: dict) -> VolumeResult | None:
    """The complete result of an earlier run in ``folder`` for the same ``request``, or ``None`` (no folder, no
    readable report, not ``ok``, another request, or a listed output file missing)."""
    try:
        report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or report.get("status") != "ok" or report.get("request") != request:
        return None
    outputs = report.get("outputs") or {}
    if not all(isinstance(name, str) and (folder / name).exists() for name in outputs.values()):
        return None
    try:
        parsed = VolumeReport.from_dict(report)
    except (KeyError, TypeError, ValueError):
        return None
    return VolumeResult(folder.name, str(src.path), report=parsed, out_dir=str(folder), key=source_key(src),
                        earlier=True)
