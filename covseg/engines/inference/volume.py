"""Volume inference math: a CT volume in HU -> lung mask, infection probability, infection mask (+ class map).

Per volume (:func:`infer_volume`):

1. lung label map (:func:`covseg.transforms.lung.lung_mask`: 0 background, 1 right, 2 left lung);
2. every axial slice holding lung is cropped to its lung box grown by 3.5 mm
   (:func:`covseg.transforms.crop.lung_box`) and windowed to [0, 1] with the COVID-SemiSeg window
   (:func:`covseg.transforms.intensity.window_hu`), so it looks like the lung-cropped 8-bit training slices;
   slices **without lung are not predicted** and stay empty (probability 0);
3. an optional *gate* (``gate(crops) -> sequence of bool``, e.g. a JCS-style slice classifier) sees the batch's
   crops and drops the slices it rejects (they stay empty too);
4. the kept crops go through :class:`covseg.engines.inference.predictor.SlicePredictor` in batches; with ``handlers``
   the batches are driven by an ignite :class:`~ignite.engine.Engine` (one iteration per batch, ``state.output`` =
   slices in the batch), so ignite handlers (``ProgressBar``, ``Timer``, custom events) attach; without, a plain
   loop runs them (ignite is not imported) and ``progress(done, total)`` is called per batch;
5. the probability maps are pasted back (:func:`covseg.transforms.crop.paste_from_box`, exact inverse of the
   crop) into a ``[z, y, x]`` float32 volume, 0 outside the boxes;
6. **infection mask** (:class:`InfectionPostprocessing`) = ``probability >= threshold`` (0.5) **and** inside the
   lung mask dilated in-plane by ``lung_margin_mm`` (5 mm): findings outside the lungs are discarded, while
   consolidation at the pleura that the lung mask may have missed is kept;
7. multi-class networks (C > 1, softmax, channel 0 = background): infection probability = ``1 - p[0]``, and
   the **label map** = ``1 + argmax(p[1:])`` inside the infection mask, 0 elsewhere (e.g. 1 ground glass,
   2 consolidation).

Data iteration over many volumes is :mod:`covseg.engines.inference.batch`; writing a volume's outputs is
:mod:`covseg.engines.inference.export`; reference labels are :mod:`covseg.io.labels`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np
from torch import nn

from covseg.engines.inference.predictor import SlicePredictor
from covseg.io.read import CTVolume
from covseg.transforms.crop import DEFAULT_MARGIN_MM, Box, crop_to_box, lung_box, margin_px, paste_from_box
from covseg.transforms.intensity import window_hu
from covseg.transforms.lung import lung_mask

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["LUNG_MARGIN_MM", "THRESHOLD", "Gate", "Handler", "InfectionPostprocessing", "Progress", "VolumeInference",
           "infer_volume"]

Gate = Callable[[Sequence[np.ndarray]], Sequence[bool]]
"""A slice gate: windowed lung crops in, one ``keep`` flag per crop out."""
Handler = Callable[["Engine"], None]
"""Called with the per-volume ignite Engine before it runs (attach ProgressBar, timers, custom events)."""
Progress = Callable[[int, int], None]
"""Called after each batch of slices with ``(batches done, batches in the volume)``."""

THRESHOLD = 0.5
LUNG_MARGIN_MM = 5.0


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


@dataclass(frozen=True)
class InfectionPostprocessing:
    """Probability -> infection mask: ``p >= threshold`` inside the lung mask dilated in-plane by
    ``lung_margin_mm``; a class map (if any) is cleared outside the infection mask (steps 6-7 above).

    Slice by slice, and only on slices that hold lung and some ``p >= threshold``: no full-volume temporaries
    (four of 79 MB each for a 512x512x300 CT before)."""

    threshold: float = THRESHOLD
    lung_margin_mm: float = LUNG_MARGIN_MM

    def __call__(self, prob: np.ndarray, lung: np.ndarray, spacing: Sequence[float],
                 classes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        # an ellipse of lung_margin_mm in each in-plane direction (non-square pixels get unequal radii in pixels)
        rx, ry = (int(round(self.lung_margin_mm / max(float(s), 1e-6))) for s in spacing[:2])
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rx + 1, 2 * ry + 1)) if rx or ry else None
        infection = np.zeros(prob.shape, np.uint8)
        for z in np.nonzero(lung.reshape(lung.shape[0], -1).any(axis=1))[0]:
            hit = prob[z] >= self.threshold
            if not hit.any():
                continue
            region = (lung[z] > 0).view(np.uint8)
            if kernel is not None:
                region = cv2.dilate(region, kernel)
            np.logical_and(hit, region, out=hit)
            infection[z] = hit
        if classes is not None:
            for z in range(classes.shape[0]):
                classes[z][infection[z] == 0] = 0
        return infection, classes


def infer_volume(volume: CTVolume, predictor: SlicePredictor, *, lung: np.ndarray | None = None,
                 gate: Gate | None = None, threshold: float = THRESHOLD, lung_margin_mm: float = LUNG_MARGIN_MM,
                 crop_margin_mm: float = DEFAULT_MARGIN_MM, handlers: Sequence[Handler] = (),
                 postprocessing: InfectionPostprocessing | None = None,
                 progress: Progress | None = None) -> VolumeInference:
    """Segment infection in ``volume`` (see the module docstring); ``lung`` skips the lung-mask step.

    ``crop_margin_mm``: margin around each slice's lung box (``transforms.crop``, 3.5 mm like the SemiSeg
    slices); ``postprocessing`` (default: ``InfectionPostprocessing(threshold, lung_margin_mm)``) turns the
    probability into the infection mask. ``handlers`` run the batches in an ignite Engine (imported only then);
    ``progress(done, total)`` is a plain per-batch callback.
    """
    t0 = time.perf_counter()
    hu = volume.array
    timing: dict[str, float] = {}
    if lung is None:
        lung = lung_mask(hu, volume.spacing)
        timing["lung_mask"] = time.perf_counter() - t0
    lung = np.asarray(lung, dtype=np.uint8)
    t_lung = time.perf_counter()
    nz = hu.shape[0]
    prob = np.zeros(hu.shape, np.float32)
    predicted = np.zeros(nz, bool)
    state: dict = {"classes": None, "n_classes": None, "gate_s": 0.0}
    lung_z = [int(z) for z in np.nonzero(lung.reshape(nz, -1).any(axis=1))[0]]
    batches = [lung_z[i:i + predictor.batch_size] for i in range(0, len(lung_z), predictor.batch_size)]

    margin = margin_px(volume.spacing, crop_margin_mm)

    def step(engine: object, zs: list[int]) -> int:
        boxes = [lung_box(lung[z], margin) for z in zs]
        crops = [_crop_window(hu[z], box) for z, box in zip(zs, boxes)]
        if gate is not None:
            t_gate = time.perf_counter()
            keep = [bool(k) for k in gate(crops)]
            state["gate_s"] += time.perf_counter() - t_gate
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

    if handlers:
        from ignite.engine import Engine  # only when ignite handlers are given: ignite costs seconds to import

        engine = Engine(step)
        for attach in handlers:
            attach(engine)
        if batches:  # no lung: nothing to run (ignite refuses empty data)
            engine.run(batches, max_epochs=1)
    else:
        for done, zs in enumerate(batches, 1):
            step(None, zs)
            if progress is not None:
                progress(done, len(batches))
    t_pred = time.perf_counter()

    post = postprocessing or InfectionPostprocessing(threshold, lung_margin_mm)
    n_classes = int(state["n_classes"] or _out_channels(predictor.network))
    infection, classes = post(prob, lung, volume.spacing, state["classes"])
    if classes is None and n_classes > 1:
        classes = np.zeros(hu.shape, np.uint8)
    t_post = time.perf_counter()
    timing.update({"predict": t_pred - t_lung, "postprocess": t_post - t_pred})
    if gate is not None:  # the gate's own share of ``predict``
        timing["gate"] = state["gate_s"]
    return VolumeInference(lung, prob, infection, predicted, classes, n_classes, timing)


def _out_channels(network: nn.Module) -> int:
    """Best guess of a network's output channels without running it (used only when no slice was predicted)."""
    for attr in ("out_channels", "num_classes", "n_classes"):
        value = getattr(network, attr, None)
        if isinstance(value, int):
            return value
    return 1
