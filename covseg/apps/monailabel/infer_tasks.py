"""MONAI Label infer tasks that run covseg's own volume pipeline and answer with a label volume in the input's
geometry.

Each request: :func:`covseg.io.read_volume` reads the datastore image (pre-transform), covseg computes the label
map (:func:`covseg.engines.inference.volume.infer_volume`, or the lung mask alone), and
:func:`covseg.io.write_volume_like` writes it with the input's exact size, spacing, origin and direction. So the
mask a viewer receives is the one ``covseg infer`` writes for the same file and settings.

Request parameters (``params`` of ``POST /infer/<model>``): ``bf16`` (``"auto"``: bf16 only where the CPU runs it
natively; ``false`` forces fp32), ``backend`` (``"auto"``, ``"torch"`` or ``"onnxruntime"``, as ``covseg infer
--backend``: ``auto`` runs ONNX Runtime where the request runs fp32 on a CPU, so on an AVX2 machine the viewer gets
the mask ``covseg infer`` writes there), ``batch_size`` (slices per forward pass, default 8), ``tta`` (flip
averaging); the diagnosis also takes ``slice_threshold``, ``patient_threshold``, ``min_lung_fraction``,
``min_lung_area_cm2`` and ``segment_gate`` (default: the classifier bundle's, as ``covseg diagnose``).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

from covseg.apps.monailabel.weights import ModelCache
from covseg.engines.inference.diagnose import DiagnosisSettings, classify_volume
from covseg.engines.inference.predictor import SlicePredictor
from covseg.engines.inference.predictor_setup import predictor_info
from covseg.engines.inference.slice_scorer import SliceScorer
from covseg.engines.inference.volume import infer_volume
from covseg.engines.runtime.backend_model import scoring_runtime
from covseg.engines.runtime.cpu import resolve_bf16
from covseg.engines.runtime.onnx_runtime import BACKENDS, backend_network
from covseg.io import CTVolume, read_volume, write_volume_like
from covseg.networks.loading import bundle_meta, bundle_parser
from covseg.reports.volume import lung_warnings
from covseg.transforms.lung import lung_mask

log = logging.getLogger(__name__)

__all__ = ["CovsegInferTask", "DiagnosisInfer", "InfectionInfer", "LungInfer", "MulticlassInfer", "ReadCTVolumed",
           "volume_warnings"]

VOLUME_KEY = "covseg_volume"
LUNG_KEY = "covseg_lung"  # the lung mask a task computed, for the result's warnings


class ReadCTVolumed:
    """Pre-transform: read ``data["image"]`` (a file path) with covseg's reader into ``data[VOLUME_KEY]``."""

    def __call__(self, data: dict) -> dict:
        data[VOLUME_KEY] = read_volume(str(data["image"]))
        return data


def precision_setting(value: Any) -> bool | str:
    """A request's ``bf16`` for :func:`resolve_bf16`: true / false, ``"auto"`` (default), ``"fp32"``, ``"bf16"``."""
    return "auto" if value is None or value == "" else value


def request_backend(value: Any, device: str) -> str:
    """A request's ``backend``: ``"auto"`` (default), ``"torch"`` or ``"onnxruntime"`` (CPU only); ValueError
    naming the choices otherwise."""
    backend = "auto" if value is None or value == "" else str(value).strip().lower()
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {value!r}")
    if backend == "onnxruntime" and device != "cpu":
        raise ValueError(f"backend onnxruntime runs on the CPU, not on {device}; use backend torch or auto")
    return backend


def _flag(value: Any, default: bool | str) -> bool | str:
    """A request parameter as ``True`` / ``False`` / ``"auto"`` (strings from JSON or Slicer's config)."""
    if value is None:
        return default
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        return text in ("1", "true", "yes", "on")
    return bool(value)


def _number(value: Any, name: str) -> float | None:
    """A numeric request setting (None when not given); ValueError naming the setting otherwise."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, not {value!r}") from None


class CovsegInferTask(BasicInferTask):
    """Base of the app's infer tasks: covseg reads, predicts and writes; MONAI Label serves and stores."""

    def __init__(self, *, labels: dict[str, int], description: str, weights: Sequence[Path] = (),
                 config: dict[str, Any] | None = None) -> None:
        super().__init__(path=[str(p) for p in weights], network=None, type=InferType.SEGMENTATION, labels=labels,
                         dimension=3, description=description, config=config)

    def is_valid(self) -> bool:
        return True  # the networks come from covseg's bundles, not from ``path``

    def pre_transforms(self, data: dict | None = None) -> Sequence[Callable]:
        return [ReadCTVolumed()]

    def inverse_transforms(self, data: dict | None = None) -> None:
        return None  # the label is computed on the input's own grid: nothing to invert

    def post_transforms(self, data: dict | None = None) -> Sequence[Callable]:
        return []

    def label_map(self, volume: CTVolume, data: dict) -> tuple[np.ndarray, dict[str, Any]]:
        """The uint8 label map ``[z, y, x]`` of ``volume`` and facts for the result JSON."""
        raise NotImplementedError

    def run_inferer(self, data: dict, convert_to_batch: bool = True, device: str = "cuda") -> dict:
        volume: CTVolume = data[VOLUME_KEY]
        label, facts = self.label_map(volume, data)
        data[self.output_label_key] = label
        facts["voxels"] = {name: int((label == value).sum()) for name, value in self.labels.items()}
        facts["warnings"] = volume_warnings(volume, data.get(LUNG_KEY))
        for warning in facts["warnings"]:
            log.warning("%s: %s", volume.source_path, warning)
        data[self.output_json_key] = facts
        return data

    def writer(self, data: dict, extension: str | None = None, dtype: Any = None) -> tuple[str, dict]:
        volume: CTVolume = data[VOLUME_KEY]
        fd, name = tempfile.mkstemp(prefix="covseg-label-", suffix=".nii.gz")
        os.close(fd)
        path = write_volume_like(data[self.output_label_key], volume, name)
        return str(path), dict(data.get(self.output_json_key, {}))


def volume_warnings(volume: CTVolume, lung: np.ndarray | None) -> list[str]:
    """What ``covseg infer`` warns about this volume: the reader's warnings, then the lung coverage ("no lung
    found: …" for a scan without lungs) when the task computed the lung mask."""
    warnings = list(volume.warnings)
    if lung is not None:
        lung_slices = int(np.count_nonzero(lung.reshape(lung.shape[0], -1).any(axis=1)))
        warnings += lung_warnings(lung_slices, int(lung.shape[0]), np.count_nonzero(lung) * volume.voxel_volume_ml)
    return warnings


def _device(data: dict) -> str:
    """The request's device: ``cuda[:N]`` when asked for, else ``cpu``."""
    device = str(data.get("device") or "cpu")
    return device if device.startswith("cuda") else "cpu"


class _NetworkInfer(CovsegInferTask):
    """An infer task whose label comes from a covseg bundle's network (fine-tuned weights when published)."""

    def __init__(self, cache: ModelCache, config: dict[str, Any] | None = None, **kwargs: Any) -> None:
        weights = [cache.bundle / "models" / "model.pt"] + ([cache.published] if cache.published else [])
        super().__init__(weights=weights, config={"bf16": "auto", "backend": "auto", "batch_size": 8, "tta": False,
                                                  **(config or {})}, **kwargs)
        self.cache = cache
        self._predictors: dict[tuple, SlicePredictor] = {}  # one per (weights, settings): folding costs ~0.5 s
        self._lock = threading.Lock()

    def _predictor(self, model: Any, sha: str, device: str, data: dict) -> SlicePredictor:
        """The predictor for these weights and request settings, made once (the last weights' only); the network
        runs on the request's ``backend`` (exported to ONNX once per weights for ONNX Runtime)."""
        precision = precision_setting(data.get("bf16"))
        backend = request_backend(data.get("backend"), device)
        key = (sha, device, int(data.get("batch_size", 8)), resolve_bf16(precision, device),
               bool(_flag(data.get("tta"), False)), backend)
        with self._lock:
            if key not in self._predictors:
                self._predictors = {k: v for k, v in self._predictors.items() if k[0] == sha}
                network = backend_network(model.network, backend, model.image_size, precision=precision,
                                          device=device, trained=True)
                self._predictors[key] = SlicePredictor(network, image_size=model.image_size, device=device,
                                                       batch_size=key[2], bf16=key[3], tta=key[4])
            return self._predictors[key]

    def run_network(self, volume: CTVolume, data: dict, lung: np.ndarray | None = None, gate: Any = None):
        """covseg's volume inference with the current weights (``lung``: its mask when known; ``gate``: which
        slices to segment); returns the result and the facts to report."""
        model, weights, sha = self.cache.get()
        device = _device(data)
        predictor = self._predictor(model, sha, device, data)
        result = infer_volume(volume, predictor, lung=lung, gate=gate)
        data[LUNG_KEY] = result.lung
        facts = {"model_file": str(weights.path), "weights_sha256": sha, "fine_tuned": weights.fine_tuned,
                 **predictor_info(predictor),  # backend, precision, device, image size, tta: what ran
                 "predicted_slices": int(result.predicted.sum())}
        return result, facts


class InfectionInfer(_NetworkInfer):
    """Binary COVID-19 infection (Inf-Net bundle, or its fine-tuned weights): 1 = infection."""

    def __init__(self, cache: ModelCache) -> None:
        super().__init__(cache, labels={"infection": 1},
                         description="covseg Inf-Net: COVID-19 lung infection (ground glass and consolidation "
                                     "together), inside the lungs")

    def label_map(self, volume: CTVolume, data: dict) -> tuple[np.ndarray, dict[str, Any]]:
        result, facts = self.run_network(volume, data)
        return result.infection.astype(np.uint8), facts


class MulticlassInfer(_NetworkInfer):
    """Ground-glass opacity (1) and consolidation (2) from the multi-class bundle, inside the infection mask."""

    def __init__(self, cache: ModelCache) -> None:
        super().__init__(cache, labels={"ground-glass opacity": 1, "consolidation": 2},
                         description="covseg multi-class Inf-Net: ground-glass opacity and consolidation")

    def label_map(self, volume: CTVolume, data: dict) -> tuple[np.ndarray, dict[str, Any]]:
        result, facts = self.run_network(volume, data)
        classes = result.classes if result.classes is not None else np.zeros_like(result.infection)
        return classes.astype(np.uint8), facts


class DiagnosisInfer(_NetworkInfer):
    """JCS joint diagnosis, as ``covseg diagnose``: the classifier bundle scores the lung slices and decides the
    patient; the infection model segments unless the patient is negative (1 = infection). The decision (positive,
    negative or indeterminate, the slice counts and thresholds) is in the result JSON under ``diagnosis``."""

    _SETTINGS = ("slice_threshold", "patient_threshold", "min_lung_fraction", "min_lung_area_cm2", "segment_gate")

    def __init__(self, cache: ModelCache, classifier: ModelCache) -> None:
        super().__init__(cache, labels={"infection": 1}, config=_settings_shown(classifier),
                         description="covseg JCS diagnosis: classify the lung slices, decide the patient, segment "
                                     "COVID-19 infection unless negative")
        self.classifier = classifier
        self._scorers: dict[tuple, SliceScorer] = {}

    def _scorer(self, data: dict) -> tuple[SliceScorer, dict]:
        """The classifier's scorer for the request's device, precision and backend (made once), and its bundle's
        settings."""
        model, _, sha = self.classifier.get()
        device = _device(data)
        precision = precision_setting(data.get("bf16"))
        key = (sha, device, resolve_bf16(precision, device), request_backend(data.get("backend"), device))
        with self._lock:
            if key not in self._scorers:
                self._scorers = {k: v for k, v in self._scorers.items() if k[0] == sha}
                scoring = scoring_runtime(model, key[3], device, precision=precision)
                self._scorers[key] = SliceScorer(model.network, model.image_size, device, bf16=key[2],
                                                 scoring=scoring)
            return self._scorers[key], model.meta

    def label_map(self, volume: CTVolume, data: dict) -> tuple[np.ndarray, dict[str, Any]]:
        scorer, meta = self._scorer(data)
        given = {k: _number(data.get(k), k) for k in self._SETTINGS}
        settings = DiagnosisSettings.from_bundle(meta, **given)
        lung = np.asarray(lung_mask(volume.array, volume.spacing), np.uint8)
        classified = classify_volume(volume, lung, scorer, settings)
        result, facts = self.run_network(volume, data, lung=lung, gate=classified.gate)
        facts["diagnosis"] = {**classified.decision, "segmented_slices": int(result.predicted.sum())}
        facts["classifier"] = {"name": meta.get("network"), "version": meta.get("version"),
                               "precision": "bf16" if scorer.bf16 else "fp32", "backend": scorer.backend}
        return result.infection.astype(np.uint8), facts


def _settings_shown(classifier: ModelCache) -> dict[str, float]:
    """The diagnosis thresholds with the classifier bundle's values, for a client's options panel (3D Slicer shows a
    task's ``config``); ``segment_gate`` only where the bundle sets one (an empty value means "none")."""
    try:
        meta = bundle_meta(bundle_parser(classifier.bundle), classifier.bundle)
    except Exception:  # noqa: BLE001 - the task says what is wrong with the bundle when it is asked to run
        meta = {}
    defaults = DiagnosisSettings.from_bundle(meta)
    return {name: getattr(defaults, name) for name in DiagnosisInfer._SETTINGS if getattr(defaults, name) is not None}


class LungInfer(CovsegInferTask):
    """Right (1) and left (2) lung from covseg's HU-threshold lung mask (no network)."""

    def __init__(self) -> None:
        super().__init__(labels={"right lung": 1, "left lung": 2},
                         description="covseg lung mask: right and left lung (airways excluded), no network")

    def label_map(self, volume: CTVolume, data: dict) -> tuple[np.ndarray, dict[str, Any]]:
        data[LUNG_KEY] = np.asarray(lung_mask(volume.array, volume.spacing), dtype=np.uint8)
        return data[LUNG_KEY], {"model_file": None}
