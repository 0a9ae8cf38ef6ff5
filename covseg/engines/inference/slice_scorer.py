"""The slice classifier at inference: P(COVID-19) of lung crops (:class:`SliceScorer`), and the slice gate built on
it (:class:`ClassifierGate`, for ``covseg infer --gate`` and ``covseg diagnose --segment-gate``)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from covseg.engines.runtime.cpu import autocast_context, resolve_bf16
from covseg.engines.runtime.fusion import fold_batchnorm
from covseg.engines.runtime.onednn_fusion import fuse_conv_relu
from covseg.networks.classifier import covid_probability

__all__ = ["ClassifierGate", "SliceScorer", "crop_key"]


class SliceScorer:
    """P(COVID-19) of grey lung crops in [0, 1] of any size (resized to ``image_size``), in batches.

    Scores come from a copy of ``network`` with its BatchNorms folded into the convolutions and, on CPU, each
    conv -> ReLU chain run as one oneDNN call, in channels-last memory (``fast``, as
    :class:`covseg.engines.inference.predictor.SlicePredictor` runs Inf-Net; same scores up to rounding);
    ``network`` itself stays as it is for the activation maps, which need its gradients. ``scoring``: a stand-in
    that computes the same logits instead (the network's ONNX Runtime export,
    :func:`covseg.engines.runtime.backend_model.scoring_runtime`: 1.18x faster on a 2-core Zen 3,
    docs/benchmarks.md)."""

    def __init__(self, network: torch.nn.Module, image_size: int = 160, device: str = "cpu",
                 batch_size: int = 16, bf16: bool | str = False, fast: bool = True,
                 scoring: torch.nn.Module | None = None) -> None:
        self.network = network.to(device).eval()
        self.image_size, self.device, self.batch_size = int(image_size), torch.device(device), int(batch_size)
        self.bf16 = resolve_bf16(bf16, self.device) and getattr(scoring, "fixed_precision", None) != "fp32"
        self.backend = "torch" if scoring is None else str(getattr(scoring, "backend", type(scoring).__name__))
        fast = fast and scoring is None
        self.memory_format = torch.channels_last if fast else torch.contiguous_format
        fused = fuse_conv_relu(fold_batchnorm(self.network)) if fast else None
        self._module = scoring if scoring is not None else (
            fused.to(memory_format=self.memory_format) if fused is not None else self.network)

    @torch.inference_mode()
    def __call__(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        scores: list[float] = []
        size = (self.image_size, self.image_size)
        for i in range(0, len(crops), self.batch_size):
            batch = torch.stack([
                F.interpolate(torch.as_tensor(np.asarray(c, np.float32))[None, None], size=size, mode="bilinear",
                              align_corners=False)[0] for c in crops[i:i + self.batch_size]]).to(self.device)
            with autocast_context(self.device, self.bf16):
                out = self._module(batch.contiguous(memory_format=self.memory_format))
            scores += covid_probability(out).cpu().tolist()
        return np.asarray(scores, np.float64)


def crop_key(crop: np.ndarray) -> tuple:
    """A key naming a crop by its shape and content (the same slice cropped twice gets the same key)."""
    a = np.ascontiguousarray(crop, np.float32)
    return a.shape, hashlib.blake2b(a.tobytes(), digest_size=16).digest()


class ClassifierGate:
    """A slice gate for :func:`covseg.engines.inference.volume.infer_volume`: keep crops scoring ``>= threshold``.

    ``name`` / ``version``: the classifier's, for the reports (:meth:`describe`). ``known``: scores already
    computed, by :func:`crop_key` (the joint diagnosis scored its slices before segmenting): only other crops are
    scored again."""

    def __init__(self, scorer: SliceScorer, threshold: float, name: str | None = None,
                 version: str | None = None, known: dict[tuple, float] | None = None) -> None:
        self.scorer, self.threshold, self.name, self.version = scorer, float(threshold), name, version
        self.known = dict(known or {})

    def describe(self) -> dict:
        """What report.json records under ``model.gate``."""
        return {"classifier": self.name, "version": self.version, "threshold": self.threshold,
                "precision": "bf16" if self.scorer.bf16 else "fp32", "backend": self.scorer.backend}

    def __call__(self, crops: Sequence[np.ndarray]) -> list[bool]:
        keys = [crop_key(c) for c in crops] if self.known else [None] * len(crops)
        todo = [i for i, k in enumerate(keys) if k not in self.known]
        fresh = dict(zip(todo, self.scorer([crops[i] for i in todo]))) if todo else {}
        return [bool((fresh[i] if i in fresh else self.known[k]) >= self.threshold) for i, k in enumerate(keys)]
