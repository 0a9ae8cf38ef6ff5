"""One volume's output files: what they are made from (:class:`VolumeOutputs`), which are written
(:class:`ExportOptions`) and a writer for each; :func:`covseg.engines.inference.export.export_volume` calls
:func:`write_outputs` into its hidden folder and writes ``report.json`` last. Outputs:

* ``infection_mask.nii.gz`` uint8 0/1; ``lung_mask.nii.gz`` uint8 (1 right, 2 left);
* ``infection_prob.nii.gz`` (``ExportOptions.save_prob``) uint8 ``round(255 * p)`` (the 0-255 convention of the
  Inf-Net maps; ``p >= 0.5`` <=> value ``>= 128``);
* ``infection_labels.nii.gz`` (multi-class models only) uint8 class map;
* ``slices.csv`` and ``report.json`` (:class:`covseg.reports.volume.VolumeReport`, whose ``outputs`` lists the files);
* pictures (``ExportOptions.figures``; on in ``covseg infer``; :mod:`covseg.reports.pictures`): ``montage.png``
  (axial slices with infection contours), ``reformats.png`` (coronal and sagittal), ``infection_curve.png``
  (:mod:`covseg.reports.curves`) and, with ``ExportOptions.overlays`` ``"infected"`` or ``"all"``,
  ``overlays/slice_<z>.png``; :func:`covseg.engines.inference.batch.run_batch` has them drawn from the end of the
  volume's inference on (:mod:`covseg.engines.inference.pictures_job`), and they are written here;
* ``infection_seg.dcm`` (DICOM inputs; ``ExportOptions.dicom_seg``, default on for DICOM): DICOM-SEG referencing
  the source series (:mod:`covseg.io.dicom_seg`); a series it cannot reference, or a patient ``covseg diagnose``
  did not segment, gets a warning instead;
* ``infection_sr.dcm`` (written whenever ``infection_seg.dcm`` is): DICOM-SR Measurement Report (TID 1500) of the
  SEG's segments, with the volumes and lung shares of ``report.json`` (:mod:`covseg.io.dicom_sr`); a problem gets
  a warning instead.

All images are written with :func:`covseg.io.write.write_volume_like`: same size, spacing, origin and direction
as the input. **To add an output**: write a function ``(folder, item) -> {key: file name}`` and call it in
:func:`write_outputs` (with a field in :class:`ExportOptions` if it is optional).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from covseg.engines.inference.pictures_job import CURVE, draw_pictures
from covseg.engines.inference.volume import VolumeInference
from covseg.io.atomic import atomic_path, atomic_write_text
from covseg.io.errors import CovsegInputError
from covseg.io.read import CTVolume
from covseg.io.write import write_volume_like
from covseg.reports.volume import VolumeReport, slices_csv_text

__all__ = ["ExportOptions", "OutputWriter", "VolumeOutputs", "write_outputs"]


@dataclass
class VolumeOutputs:
    """What the export of one volume needs: the input, its inference, its report and where it goes."""

    volume: CTVolume
    result: VolumeInference
    report: VolumeReport
    rows: list[dict]
    final_dir: Path
    started: float = field(default_factory=time.perf_counter)
    key: str = ""
    """The input's identity (:func:`covseg.io.naming.source_key`); default: the volume's resolved path."""
    owners: dict[str, str] = field(default_factory=dict)
    """Names recorded in the output folder's summary -> their source keys (:func:`covseg.io.naming.pick_name`)."""
    extras: dict = field(default_factory=dict)
    """Results of other engines for extra writers (e.g. ``"diagnosis"``: :mod:`covseg.engines.inference.diagnose`)."""
    pictures: Future | None = None
    """The pictures being drawn since the inference ended
    (:func:`covseg.engines.inference.pictures_job.start_pictures`), or ``None``: drawn at export."""


@dataclass(frozen=True)
class ExportOptions:
    """Which optional outputs to write."""

    save_prob: bool = False
    figures: bool = False
    """Pictures (montage, reformats, curve); ``covseg infer`` turns them on unless ``--no-figures``."""
    overlays: str = "none"
    dicom_seg: bool | None = None
    """``None``: on for DICOM inputs; ``True`` asks for it (a non-DICOM input then gets a warning); ``False``: off."""
    writers: tuple = ()
    """Extra :data:`OutputWriter` callables, run after the built-in outputs (e.g. the joint diagnosis files)."""


OutputWriter = Callable[[Path, VolumeOutputs], dict[str, str]]
"""Writes one output of a volume into a folder; returns ``{output key: file name}`` for ``report.outputs``."""


def write_outputs(folder: Path, item: VolumeOutputs, options: ExportOptions) -> dict[str, str]:
    """Write every output of ``item`` except ``report.json`` into ``folder``; one call per output.

    The pictures are drawn in a second thread while this one compresses the NIfTI files (zlib releases the GIL),
    so the two overlap on a multi-core machine; an error in either propagates once both have stopped."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="covseg-figures") as pool:
        figures = pool.submit(write_figures, folder, item, options.overlays) if options.figures else None
        files: dict[str, str] = {}
        files |= write_masks(folder, item)
        if options.save_prob:
            files |= write_probability(folder, item)
        if item.result.classes is not None:
            files |= write_label_map(folder, item)
        files |= write_slice_table(folder, item)
        if figures is not None:
            files |= figures.result()
    if options.dicom_seg or (options.dicom_seg is None and item.volume.source_files):
        files |= write_dicom_seg_file(folder, item)
    for writer in options.writers:
        files |= writer(folder, item)
    return files


def write_masks(folder: Path, item: VolumeOutputs) -> dict[str, str]:
    """``infection_mask.nii.gz`` (0/1) and ``lung_mask.nii.gz`` (1 right, 2 left)."""
    files = {"infection_mask": "infection_mask.nii.gz", "lung_mask": "lung_mask.nii.gz"}
    write_volume_like(item.result.infection, item.volume, folder / files["infection_mask"])
    write_volume_like(item.result.lung, item.volume, folder / files["lung_mask"])
    return files


def write_probability(folder: Path, item: VolumeOutputs) -> dict[str, str]:
    """``infection_prob.nii.gz``: uint8 ``round(255 * p)``."""
    prob = item.result.prob
    q = np.empty(prob.shape, np.uint8)
    for z in range(q.shape[0]):  # slice by slice: no full-volume float temporary
        q[z] = np.rint(prob[z] * 255.0)
    write_volume_like(q, item.volume, folder / "infection_prob.nii.gz")
    return {"infection_prob": "infection_prob.nii.gz"}


def write_label_map(folder: Path, item: VolumeOutputs) -> dict[str, str]:
    """``infection_labels.nii.gz``: the class map of a multi-class model."""
    write_volume_like(item.result.classes, item.volume, folder / "infection_labels.nii.gz")
    return {"infection_labels": "infection_labels.nii.gz"}


def write_slice_table(folder: Path, item: VolumeOutputs) -> dict[str, str]:
    """``slices.csv``: one row per axial slice."""
    atomic_write_text(folder / "slices.csv", slices_csv_text(item.rows))
    return {"slices": "slices.csv"}


def write_figures(folder: Path, item: VolumeOutputs, overlays: str = "none") -> dict[str, str]:
    """The pictures of :func:`draw_pictures` (those started early, :attr:`VolumeOutputs.pictures`, else drawn now)
    and, on request, ``overlays/``."""
    from covseg.reports.pictures.volume_figures import write_volume_figures

    res, vol = item.result, item.volume
    pngs = dict(item.pictures.result() if item.pictures is not None else draw_pictures(vol, res, item.rows))
    curve = pngs.pop(CURVE, None)
    files = write_volume_figures(folder, vol.array, res.lung, res.infection, vol.spacing, classes=res.classes,
                                 name=vol.name, overlays=overlays, drawn=pngs)
    if curve is None:
        return files
    with atomic_path(folder / CURVE) as tmp:
        tmp.write_bytes(curve)
    return {**files, "curve": CURVE}


def write_dicom_seg_file(folder: Path, item: VolumeOutputs) -> dict[str, str]:
    """``infection_seg.dcm`` for a DICOM input; a series that cannot be referenced, or a patient ``covseg diagnose``
    did not segment (its empty Infection segment would read as "none found" in a PACS) -> a report warning."""
    from covseg import __version__
    from covseg.io.dicom_seg import write_dicom_seg

    res, vol = item.result, item.volume
    if not vol.source_files:
        item.report.warnings.append("DICOM-SEG not written: the input is not a DICOM series")
        return {}
    if (item.extras.get("diagnosis") or {}).get("segmented") is False:
        item.report.warnings.append("DICOM-SEG not written: the patient was not segmented (classified negative)")
        return {}
    multiclass = res.classes is not None
    try:
        _, notes = write_dicom_seg(res.classes if multiclass else res.infection, vol, vol.source_files,
                                   folder / "infection_seg.dcm", multiclass=multiclass, model=item.report.model,
                                   software_version=__version__)
    except CovsegInputError as exc:
        item.report.warnings.append(f"DICOM-SEG not written: {exc}")
        return {}
    item.report.warnings.extend(notes)
    return {"dicom_seg": "infection_seg.dcm", **write_dicom_sr_file(folder, item)}


def write_dicom_sr_file(folder: Path, item: VolumeOutputs) -> dict[str, str]:
    """``infection_sr.dcm``: the Measurement Report of ``infection_seg.dcm`` (written first) with the report's
    volume and lung share of each segment and the lung volume; a problem -> a report warning."""
    from covseg import __version__
    from covseg.io.dicom_sr import write_dicom_sr

    try:
        write_dicom_sr(folder / "infection_seg.dcm", folder / "infection_sr.dcm", segment_measures(item.report),
                       item.report.lung_ml, source=item.volume.source_path, model=item.report.model,
                       software_version=__version__)
    except CovsegInputError as exc:
        item.report.warnings.append(f"DICOM-SR not written: {exc}")
        return {}
    return {"dicom_sr": "infection_sr.dcm"}


def segment_measures(report: VolumeReport) -> dict[int, tuple[float, float]]:
    """SEG segment number -> (mL, % of the lung) from ``report``: segment 1 = ``infection_ml`` and
    ``lung_involvement_percent``; for a multi-class model, segment k = class k's ``class_volumes`` entry."""
    if report.class_volumes:  # built in class order 1, 2, ...
        return {k: (v["ml"], v["lung_percent"]) for k, v in enumerate(report.class_volumes.values(), start=1)}
    return {1: (report.infection_ml, report.lung_involvement_percent)}
