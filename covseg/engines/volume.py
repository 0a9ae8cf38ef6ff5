"""Volume inference: a CT volume in HU -> lung mask, infection probability, infection mask (+ class map), report.

Per volume (:func:`infer_volume`):

1. lung label map (:func:`covseg.transforms.lung.lung_mask`: 0 background, 1 right, 2 left lung);
2. every axial slice holding lung is cropped to its lung box grown by 3.5 mm
   (:func:`covseg.transforms.crop.lung_box`) and windowed to [0, 1] with the COVID-SemiSeg window
   (:func:`covseg.transforms.intensity.window_hu`), so it looks like the lung-cropped 8-bit training slices;
   slices **without lung are not predicted** and stay empty (probability 0);
3. an optional *gate* (``gate(crops) -> sequence of bool``, e.g. a JCS-style slice classifier) sees the batch's
   crops and drops the slices it rejects (they stay empty too);
4. the kept crops go through :class:`covseg.engines.predictor.SlicePredictor` in batches, driven by an ignite
   :class:`~ignite.engine.Engine` (one iteration per batch, ``state.output`` = slices in the batch), so ignite
   handlers (``ProgressBar``, ``Timer``, custom events) attach through ``handlers``;
5. the probability maps are pasted back (:func:`covseg.transforms.crop.paste_from_box`, exact inverse of the
   crop) into a ``[z, y, x]`` float32 volume, 0 outside the boxes;
6. **infection mask** = ``probability >= threshold`` (0.5) **and** inside the lung mask dilated in-plane by
   ``lung_margin_mm`` (5 mm): findings outside the lungs are discarded, while consolidation at the pleura that
   the lung mask may have missed is kept;
7. multi-class networks (C > 1, softmax, channel 0 = background): infection probability = ``1 - p[0]``, and
   the **label map** = ``1 + argmax(p[1:])`` inside the infection mask, 0 elsewhere (e.g. 1 ground glass,
   2 consolidation).

:func:`run_batch` runs a list of inputs with reading of the next volume and writing of the previous one
overlapped with compute (one reader and one writer thread), goes on after a failing input, and returns one
:class:`covseg.reports.batch.VolumeResult` per input. Outputs of a volume go to ``<out>/<name>/``, written into
a hidden temporary folder that is renamed at the end, so a failed volume leaves no (partial) folder:

* ``infection_mask.nii.gz`` uint8 0/1; ``lung_mask.nii.gz`` uint8 (1 right, 2 left);
* ``infection_prob.nii.gz`` (``save_prob=True``) uint8 ``round(255 * p)`` (the 0-255 convention of the Inf-Net
  maps; ``p >= 0.5`` <=> value ``>= 128``);
* ``infection_labels.nii.gz`` (multi-class models only) uint8 class map;
* ``report.json`` (:class:`covseg.reports.volume.VolumeReport`) and ``slices.csv``.

All images are written with :func:`covseg.io.write.write_volume_like`: same size, spacing, origin and direction
as the input (a NIfTI input's affine is reproduced exactly).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import SimpleITK as sitk
from ignite.engine import Engine
from torch import nn

from covseg.engines.onnx_runtime import OnnxRuntimeNetwork
from covseg.engines.predictor import SlicePredictor
from covseg.io.atomic import atomic_write_text, ensure_writable_dir
from covseg.io.discover import VolumeSource, find_volumes
from covseg.io.errors import CovsegInputError
from covseg.io.read import CTVolume, read_volume
from covseg.io.write import write_volume_like
from covseg.reports.batch import VolumeResult
from covseg.reports.volume import VolumeReport, build_volume_report, slice_rows, slices_csv_text
from covseg.transforms.crop import DEFAULT_MARGIN_MM, Box, crop_to_box, lung_box, margin_px, paste_from_box
from covseg.transforms.intensity import window_hu
from covseg.transforms.lung import lung_mask

log = logging.getLogger(__name__)

__all__ = [
    "LABEL_SUFFIXES",
    "VolumeInference",
    "find_label",
    "infer_volume",
    "process_volume",
    "read_label",
    "run_batch",
]

Gate = Callable[[Sequence[np.ndarray]], Sequence[bool]]
"""A slice gate: windowed lung crops in, one ``keep`` flag per crop out."""
Handler = Callable[[Engine], None]
"""Called with the per-volume ignite Engine before it runs (attach ProgressBar, timers, custom events)."""

THRESHOLD = 0.5
LUNG_MARGIN_MM = 5.0
LABEL_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")


# ----------------------------------------------------------------------------------- transforms adapter
def _crop_window(hu_slice: np.ndarray, box: Box) -> np.ndarray:
    """The network input of one slice: the lung box of the HU slice, windowed to [0, 1] (SemiSeg window)."""
    return window_hu(crop_to_box(hu_slice, box))


# ----------------------------------------------------------------------------------------- inference
@dataclass
class VolumeInference:
    """Arrays of one volume's inference, all ``[z, y, x]`` like ``CTVolume.array``."""

    lung: np.ndarray
    prob: np.ndarray
    infection: np.ndarray
    predicted: np.ndarray
    classes: np.ndarray | None = None
    n_classes: int = 1
    timing_s: dict[str, float] = field(default_factory=dict)


def _dilate_in_plane(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """Per-axial-slice dilation of a boolean ``[z, y, x]`` mask by an elliptic disk (only slices holding mask)."""
    out = mask.copy()
    if radius_px <= 0:
        return out
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius_px + 1, 2 * radius_px + 1))
    for z in np.nonzero(mask.reshape(mask.shape[0], -1).any(axis=1))[0]:
        out[z] = cv2.dilate(mask[z].view(np.uint8), kernel).astype(bool)
    return out


def infer_volume(volume: CTVolume, predictor: SlicePredictor, *, lung: np.ndarray | None = None,
                 gate: Gate | None = None, threshold: float = THRESHOLD, lung_margin_mm: float = LUNG_MARGIN_MM,
                 crop_margin_mm: float = DEFAULT_MARGIN_MM, handlers: Sequence[Handler] = ()) -> VolumeInference:
    """Segment infection in ``volume`` (see the module docstring); ``lung`` skips the lung-mask step.

    ``crop_margin_mm``: margin around each slice's lung box (``transforms.crop``, 3.5 mm like the SemiSeg
    slices); ``lung_margin_mm``: in-plane dilation of the lung mask that bounds the infection mask.
    """
    t0 = time.perf_counter()
    hu = volume.array
    if lung is None:
        lung = lung_mask(hu, volume.spacing)
    lung = np.asarray(lung, dtype=np.uint8)
    t_lung = time.perf_counter()
    nz = hu.shape[0]
    prob = np.zeros(hu.shape, np.float32)
    predicted = np.zeros(nz, bool)
    state: dict = {"classes": None, "n_classes": None}
    lung_z = [int(z) for z in np.nonzero(lung.reshape(nz, -1).any(axis=1))[0]]
    batches = [lung_z[i:i + predictor.batch_size] for i in range(0, len(lung_z), predictor.batch_size)]

    margin = margin_px(volume.spacing, crop_margin_mm)

    def step(engine: Engine, zs: list[int]) -> int:
        boxes = [lung_box(lung[z], margin) for z in zs]
        crops = [_crop_window(hu[z], box) for z, box in zip(zs, boxes)]
        if gate is not None:
            keep = [bool(k) for k in gate(crops)]
            if len(keep) != len(crops):
                raise ValueError(f"slice gate returned {len(keep)} flags for {len(crops)} slices")
            zs, boxes, crops = ([x for x, k in zip(seq, keep) if k] for seq in (zs, boxes, crops))
        if not zs:
            return 0
        for z, box, p in zip(zs, boxes, predictor.predict(crops)):
            c = p.shape[0]
            if state["n_classes"] is None:
                state["n_classes"] = c
                if c > 1:
                    state["classes"] = np.zeros(hu.shape, np.uint8)
            if c == 1:
                prob[z] = paste_from_box(p[0], box, prob.shape)
            else:
                prob[z] = paste_from_box(1.0 - p[0], box, prob.shape)
                state["classes"][z] = paste_from_box((np.argmax(p[1:], axis=0) + 1).astype(np.uint8), box,
                                                     prob.shape)
            predicted[z] = True
        return len(zs)

    engine = Engine(step)
    for attach in handlers:
        attach(engine)
    if batches:  # no lung: nothing to run (ignite refuses empty data)
        engine.run(batches, max_epochs=1)
    t_pred = time.perf_counter()

    spacing_x, spacing_y = float(volume.spacing[0]), float(volume.spacing[1])
    radius = int(round(lung_margin_mm / max(min(spacing_x, spacing_y), 1e-6)))
    region = _dilate_in_plane(lung > 0, radius)
    infection = ((prob >= threshold) & region).astype(np.uint8)
    n_classes = int(state["n_classes"] or _out_channels(predictor.network))
    classes = state["classes"]
    if classes is not None:
        classes[infection == 0] = 0
    elif n_classes > 1:
        classes = np.zeros(hu.shape, np.uint8)
    t_post = time.perf_counter()
    timing = {"lung_mask": t_lung - t0, "predict": t_pred - t_lung, "postprocess": t_post - t_pred}
    return VolumeInference(lung, prob, infection, predicted, classes, n_classes, timing)


def _out_channels(network: nn.Module) -> int:
    """Best guess of a network's output channels without running it (used only when no slice was predicted)."""
    for attr in ("out_channels", "num_classes", "n_classes"):
        value = getattr(network, attr, None)
        if isinstance(value, int):
            return value
    return 1


# ------------------------------------------------------------------------------------------- labels
def find_label(labels_dir: str | Path, name: str) -> Path | None:
    """``<labels_dir>/<name>`` + one of :data:`LABEL_SUFFIXES`, or ``None``."""
    for suffix in LABEL_SUFFIXES:
        path = Path(labels_dir) / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def read_label(path: str | Path, volume: CTVolume) -> tuple[np.ndarray, list[str]]:
    """A label image as a ``[z, y, x]`` LPS array matching ``volume``; raises ``CovsegInputError`` if it cannot.

    The label must have the input's size; a different spacing/origin/direction is accepted with a warning (the
    label is compared voxel by voxel).
    """
    path = Path(path)
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise CovsegInputError(path, f"label cannot be read ({' '.join(str(exc).split())[:160]})") from None
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise CovsegInputError(path, "label is not a 3D single-channel image")
    ref = volume.reference
    warnings = []
    if tuple(img.GetSize()) != tuple(ref.size):
        raise CovsegInputError(path, f"label size {img.GetSize()} differs from the input's {tuple(ref.size)}")
    same = (np.allclose(img.GetSpacing(), ref.spacing, rtol=1e-3, atol=1e-4)
            and np.allclose(img.GetOrigin(), ref.origin, atol=1e-2)
            and np.allclose(img.GetDirection(), ref.direction, atol=1e-3))
    if not same:
        warnings.append(f"label {path.name} geometry (spacing/origin/direction) differs from the input's; "
                        "compared voxel by voxel")
    img.SetDirection(ref.direction)  # orient like the input so that voxels line up
    oriented = sitk.DICOMOrient(img, "LPS") if ref.orientation != "LPS" else img
    array = sitk.GetArrayFromImage(oriented)
    if array.shape != volume.array.shape:
        raise CovsegInputError(path, f"label shape {array.shape} differs from the input's {volume.array.shape}")
    return array, warnings


# ------------------------------------------------------------------------------------------ outputs
@dataclass
class _Prepared:
    """What the writer thread needs for one volume."""

    volume: CTVolume
    result: VolumeInference
    report: VolumeReport
    rows: list[dict]
    final_dir: Path
    started: float = field(default_factory=time.perf_counter)


def process_volume(volume: CTVolume, predictor: SlicePredictor, out_dir: str | Path, *,
                   label_path: str | Path | None = None, labels_dir: str | Path | None = None,
                   gate: Gate | None = None, save_prob: bool = False, model_info: dict | None = None,
                   handlers: Sequence[Handler] = (), threshold: float = THRESHOLD,
                   lung_margin_mm: float = LUNG_MARGIN_MM, timing_s: dict[str, float] | None = None,
                   write: bool = True) -> VolumeReport:
    """Infer, report and (``write``) save one volume under ``<out_dir>/<volume.name>/``; return its report."""
    prepared = _prepare(volume, predictor, Path(out_dir), label_path, labels_dir, gate, model_info or {}, handlers,
                        threshold, lung_margin_mm, timing_s or {})
    if write:
        _write(prepared, save_prob)
    return prepared.report


def _prepare(volume: CTVolume, predictor: SlicePredictor, out_dir: Path, label_path: str | Path | None,
             labels_dir: str | Path | None, gate: Gate | None, model_info: dict, handlers: Sequence[Handler],
             threshold: float, lung_margin_mm: float, timing_s: dict[str, float]) -> _Prepared:
    t0 = time.perf_counter()
    started = t0 - timing_s.get("read", 0.0)
    result = infer_volume(volume, predictor, gate=gate, threshold=threshold, lung_margin_mm=lung_margin_mm,
                          handlers=handlers)
    warnings = list(volume.warnings)
    if model_info and not model_info.get("trained", True):
        warnings.append(f"model {model_info.get('name', '?')!r} has no trained weights: the infection outputs are "
                        "not meaningful (lung figures are)")
    label = None
    if label_path is None and labels_dir is not None:
        label_path = find_label(labels_dir, volume.name)
        if label_path is None:
            warnings.append(f"no label {Path(labels_dir) / (volume.name + '.nii.gz')}: no scores")
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
        model=model_info, timing_s=timing,
    )
    rows = slice_rows(result.lung, result.infection, result.prob, result.predicted)
    report.timing_s["report"] = round(time.perf_counter() - t1, 3)
    report.timing_s["compute"] = round(time.perf_counter() - t0, 3)
    return _Prepared(volume, result, report, rows, out_dir / volume.name, started)


def _write(p: _Prepared, save_prob: bool) -> None:
    """Write all outputs into a hidden temporary folder, then rename it to ``<out>/<name>`` (replacing it)."""
    t0 = time.perf_counter()
    final = p.final_dir
    parent = ensure_writable_dir(final.parent)
    tmp = parent / f".tmp-{secrets.token_hex(4)}-{final.name}"
    try:
        tmp.mkdir()
        files = {"infection_mask": "infection_mask.nii.gz", "lung_mask": "lung_mask.nii.gz"}
        write_volume_like(p.result.infection, p.volume, tmp / files["infection_mask"])
        write_volume_like(p.result.lung, p.volume, tmp / files["lung_mask"])
        if save_prob:
            files["infection_prob"] = "infection_prob.nii.gz"
            q = np.empty(p.result.prob.shape, np.uint8)
            for z in range(q.shape[0]):  # slice by slice: no full-volume float temporary
                q[z] = np.rint(p.result.prob[z] * 255.0)
            write_volume_like(q, p.volume, tmp / files["infection_prob"])
        if p.result.classes is not None:
            files["infection_labels"] = "infection_labels.nii.gz"
            write_volume_like(p.result.classes, p.volume, tmp / files["infection_labels"])
        files["slices"] = "slices.csv"
        atomic_write_text(tmp / files["slices"], slices_csv_text(p.rows))
        files["report"] = "report.json"
        p.report.outputs = files
        now = time.perf_counter()
        p.report.timing_s["write"] = round(now - t0, 3)
        p.report.timing_s["total"] = round(now - p.started, 3)
        atomic_write_text(tmp / files["report"], p.report.to_json())
        _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an existing ``final`` (a previous run) is replaced."""
    old = None
    if final.exists() or final.is_symlink():
        if not final.is_dir() or final.is_symlink():
            raise CovsegInputError(final, "output exists and is not a folder")
        old = final.parent / f".old-{secrets.token_hex(4)}-{final.name}"
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


# -------------------------------------------------------------------------------------------- batch
def _as_predictor(model: object, image_size: int | None, device: str, batch_size: int,
                  bf16: bool | str, tta: bool = False) -> tuple[SlicePredictor, dict]:
    if isinstance(model, SlicePredictor):
        return model, {"name": type(model.network).__name__, "trained": True}
    network = getattr(model, "network", model)
    if not isinstance(network, nn.Module):
        raise TypeError(f"model must be a LoadedModel, an nn.Module or a SlicePredictor, not {type(model).__name__}")
    size = getattr(model, "image_size", 352) if image_size is None else image_size
    info = {"name": getattr(model, "name", type(network).__name__), "image_size": size}
    if hasattr(model, "trained"):
        info["trained"] = bool(model.trained)
    predictor = SlicePredictor(network, image_size=size, device=device, batch_size=batch_size, bf16=bf16, tta=tta)
    info["tta"] = predictor.tta  # the predictor's reading of the option, so the report cannot disagree with it
    info["backend"] = "onnxruntime" if isinstance(network, OnnxRuntimeNetwork) else "torch"
    return predictor, info


def _error_text(exc: BaseException, source: str) -> str:
    if isinstance(exc, CovsegInputError):
        return str(exc)
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{source}: {type(exc).__name__}: {text}"[:400]


def _failed(src: VolumeSource, exc: BaseException) -> VolumeResult:
    return VolumeResult(src.name, str(src.path), status="error", error=_error_text(exc, str(src.path)))


def run_batch(sources: Sequence[VolumeSource | str | Path], out_dir: str | Path, model: object,
              labels_dir: str | Path | None = None, *, save_prob: bool = False, gate: Gate | None = None,
              device: str = "cpu", batch_size: int = 8, bf16: bool | str = "auto", image_size: int | None = None,
              tta: bool = False, handlers: Sequence[Handler] = (),
              on_start: Callable[[VolumeSource], None] | None = None,
              on_result: Callable[[VolumeResult], None] | None = None, threshold: float = THRESHOLD,
              lung_margin_mm: float = LUNG_MARGIN_MM) -> list[VolumeResult]:
    """Process every volume of ``sources`` (paths or :class:`VolumeSource`) into ``out_dir``; never stops early.

    ``model``: a :class:`covseg.networks.loading.LoadedModel` (its ``image_size`` is used unless ``image_size``
    is given), an ``nn.Module`` (``image_size`` default 352) or a ready :class:`SlicePredictor`; ``tta``: flip
    averaging (:class:`SlicePredictor`), recorded in each report's ``model`` entry. Reading of the
    next volume and writing of the previous one run in background threads. ``on_start(source)`` /
    ``on_result(result)`` are called in input order from the calling thread. An unwritable ``out_dir`` raises
    :class:`CovsegInputError` before anything is read.
    """
    out_dir = ensure_writable_dir(out_dir)
    if labels_dir is not None and not Path(labels_dir).is_dir():
        raise CovsegInputError(labels_dir, "labels folder not found")
    paths = [s for s in sources if not isinstance(s, VolumeSource)]
    srcs: list[VolumeSource] = [s for s in sources if isinstance(s, VolumeSource)] + (find_volumes(paths) if paths
                                                                                      else [])
    predictor, info = _as_predictor(model, image_size, device, batch_size, bf16, tta)
    results: list[VolumeResult | None] = [None] * len(srcs)
    pending: tuple[int, Future, _Prepared] | None = None

    def timed_read(src: VolumeSource) -> tuple[CTVolume, float]:
        t = time.perf_counter()
        vol = read_volume(src)
        return vol, time.perf_counter() - t

    def finish(index: int, fut: Future, prep: _Prepared) -> None:
        src = srcs[index]
        try:
            fut.result()
            results[index] = VolumeResult(src.name, str(src.path), report=prep.report, out_dir=str(prep.final_dir))
        except Exception as exc:  # noqa: BLE001 - one bad output must not stop the batch
            results[index] = _failed(src, exc)
        if on_result is not None:
            on_result(results[index])

    with ThreadPoolExecutor(1, thread_name_prefix="covseg-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="covseg-write") as writer:
        next_read = reader.submit(timed_read, srcs[0]) if srcs else None
        for i, src in enumerate(srcs):
            current = next_read
            next_read = reader.submit(timed_read, srcs[i + 1]) if i + 1 < len(srcs) else None
            if on_start is not None:
                on_start(src)
            try:
                volume, read_s = current.result()
                prep = _prepare(volume, predictor, out_dir, None, labels_dir, gate, info, handlers, threshold,
                                lung_margin_mm, {"read": read_s})
                del volume
            except Exception as exc:  # noqa: BLE001 - report and go on with the next input
                log.debug("volume %s failed", src.path, exc_info=True)
                if pending is not None:
                    finish(*pending)
                    pending = None
                results[i] = _failed(src, exc)
                if on_result is not None:
                    on_result(results[i])
                continue
            if pending is not None:  # at most one volume waiting to be written: bounded memory
                finish(*pending)
            pending = (i, writer.submit(_write, prep, save_prob), prep)
        if pending is not None:
            finish(*pending)
    return [r for r in results if r is not None]
