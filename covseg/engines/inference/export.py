"""Export of one volume's results: every output file, written into a hidden folder that replaces ``<out>/<name>``.

:func:`export_volume` is the one place where a volume's outputs are written. Files go to
``<out>/.tmp-<pid>@<host>-<hex>-<name>/``, ``report.json`` last, and the folder is then renamed to ``<out>/<name>/``
(replacing this input's previous result), so a failure leaves no partial folder and a ``kill -9`` leaves
only a hidden folder that the next run removes (:func:`covseg.io.atomic.clean_leftovers`). The name is
checked under the output folder's lock just before the rename: a folder holding another input's result
is never replaced; this volume then goes to ``<name>_<tag>`` (:mod:`covseg.io.naming`). Outputs:

* ``infection_mask.nii.gz`` uint8 0/1; ``lung_mask.nii.gz`` uint8 (1 right, 2 left);
* ``infection_prob.nii.gz`` (``ExportOptions.save_prob``) uint8 ``round(255 * p)`` (the 0-255 convention of the
  Inf-Net maps; ``p >= 0.5`` <=> value ``>= 128``);
* ``infection_labels.nii.gz`` (multi-class models only) uint8 class map;
* ``slices.csv`` and ``report.json`` (:class:`covseg.reports.volume.VolumeReport`, whose ``outputs`` lists the files);
* pictures (``ExportOptions.figures``; on in ``covseg infer``; :mod:`covseg.reports.pictures`): ``montage.png``
  (axial slices with infection contours), ``reformats.png`` (coronal and sagittal), ``infection_curve.png``
  (:mod:`covseg.reports.curves`) and, with ``ExportOptions.overlays`` ``"infected"`` or ``"all"``,
  ``overlays/slice_<z>.png``; :func:`covseg.engines.inference.batch.run_batch` has them drawn from the end of the
  volume's inference on (:func:`start_pictures`), and they are written here;
* ``infection_seg.dcm`` (DICOM inputs; ``ExportOptions.dicom_seg``, default on for DICOM): DICOM-SEG referencing
  the source series (:mod:`covseg.io.dicom_seg`); a series it cannot reference, or a patient ``covseg diagnose``
  did not segment, gets a warning instead.

All images are written with :func:`covseg.io.write.write_volume_like`: same size, spacing, origin and direction
as the input. **To add an output**: write a function ``(folder, item) -> {key: file name}`` and call it in
:func:`write_outputs` (with a field in :class:`ExportOptions` if it is optional).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from covseg.engines.inference.volume import VolumeInference
from covseg.io.atomic import atomic_path, atomic_write_text, ensure_writable_dir, leftover_name
from covseg.io.errors import CovsegInputError
from covseg.io.naming import pick_name
from covseg.io.outlock import output_lock
from covseg.io.read import CTVolume
from covseg.io.write import write_volume_like
from covseg.reports.volume import VolumeReport, class_columns, slices_csv_text

__all__ = ["ExportOptions", "OutputWriter", "VolumeOutputs", "draw_pictures", "export_volume", "replace_dir",
           "start_pictures", "warm_pictures", "write_outputs"]


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
    """The pictures being drawn since the inference ended (:func:`start_pictures`), or ``None``: drawn at export."""


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


def export_volume(item: VolumeOutputs, options: ExportOptions = ExportOptions()) -> Path:
    """Write ``item``'s outputs into a hidden folder, then rename it to ``item.final_dir``; return that folder."""
    t0 = time.perf_counter()
    parent = ensure_writable_dir(item.final_dir.parent, probe=False)
    with output_lock(parent):
        _settle_name(item)
    tmp = parent / leftover_name("tmp", item.final_dir.name)
    try:
        tmp.mkdir()
        files = write_outputs(tmp, item, options)
        files["report"] = "report.json"
        item.report.outputs = files
        now = time.perf_counter()
        item.report.timing_s["write"] = round(now - t0, 3)
        item.report.timing_s["total"] = round(now - item.started, 3)
        atomic_write_text(tmp / files["report"], item.report.to_json())
        with output_lock(parent):
            if _settle_name(item):  # another run took the name meanwhile
                atomic_write_text(tmp / files["report"], item.report.to_json())
            replace_dir(tmp, item.final_dir)
    except CovsegInputError as exc:  # name the file the user will look for, not its hidden temporary
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.path is None or str(tmp) not in exc.path:
            raise
        raise CovsegInputError(exc.path.replace(str(tmp), str(item.final_dir)), exc.reason) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return item.final_dir


def _settle_name(item: VolumeOutputs) -> bool:
    """Point ``item`` at a folder that is free or its own (call under the lock); True if the name changed."""
    key = item.key or str(item.volume.source_path.resolve())
    final = item.final_dir
    name = pick_name(final.parent, final.name, key, item.owners)
    if name == final.name:
        return False
    item.final_dir = final.parent / name
    item.report.name = name
    return True


# ------------------------------------------------------------------------------------------- outputs
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


CURVE = "infection_curve.png"


def draw_pictures(volume: CTVolume, result: VolumeInference, rows: list[dict]) -> dict[str, bytes]:
    """PNG bytes by file name: ``montage.png``, ``reformats.png`` and ``infection_curve.png`` (a volume of too few
    slices, :func:`covseg.reports.picks.through_plane_views`, gets the montage only)."""
    from covseg.reports.curves import infection_curve_png  # matplotlib: imported only when pictures are made
    from covseg.reports.picks import through_plane_views
    from covseg.reports.pictures.volume_figures import volume_figure_pngs

    pngs = volume_figure_pngs(volume.array, result.lung, result.infection, volume.spacing, classes=result.classes,
                              name=volume.name)
    if through_plane_views(volume.array.shape[0]):
        pngs[CURVE] = infection_curve_png(rows, volume.spacing, title=volume.name, class_columns=class_columns(
            result.n_classes) if result.classes is not None else ())
    return pngs


def warm_pictures() -> threading.Thread:
    """Import the pictures' modules (matplotlib, ``skimage.transform``: 0.6-0.8 s) in a thread of their own, now.

    :func:`covseg.engines.inference.batch.run_batch` calls it while it waits for its first volume to be read: the
    imports then use a core that would idle, instead of delaying the first volume's pictures at the end of its
    inference. The main thread imports nothing while its volumes compute, so the two threads never import the same
    package at once; a picture thread that starts before this one is done waits for the modules (Python's import locks).
    """
    thread = threading.Thread(target=_import_pictures, name="covseg-pictures-import", daemon=True)
    thread.start()
    return thread


def _import_pictures() -> None:
    """The imports of :func:`draw_pictures`; an error shows up where the pictures are drawn, not here."""
    with contextlib.suppress(Exception):
        import covseg.reports.curves  # noqa: F401
        import covseg.reports.pictures.volume_figures  # noqa: F401


def start_pictures(volume: CTVolume, result: VolumeInference, rows: list[dict]) -> Future:
    """:func:`draw_pictures` in a thread of its own, from now on: a volume's pictures are drawn while its report is
    built and its masks are compressed (the future goes into :attr:`VolumeOutputs.pictures`)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="covseg-pictures")
    try:
        return pool.submit(draw_pictures, volume, result, rows)
    finally:
        pool.shutdown(wait=False)  # the thread ends once the pictures are drawn


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
    return {"dicom_seg": "infection_seg.dcm"}


# ----------------------------------------------------------------------------------------- folder swap
def replace_dir(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an existing ``final`` (a previous run) is replaced."""
    old = None
    if final.exists() or final.is_symlink():
        if not final.is_dir() or final.is_symlink():
            raise CovsegInputError(final, "output exists and is not a folder")
        old = final.parent / leftover_name("old", final.name)
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old is not None:
            with contextlib.suppress(OSError):
                os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
