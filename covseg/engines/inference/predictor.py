"""Batched 2D inference: slices in [0, 1] -> per-slice probability maps at each slice's own size.

Each slice is resized to ``image_size``² (bilinear, ``align_corners=False``), slices are stacked in batches of
``batch_size``, the network runs under ``torch.inference_mode`` (optionally bf16 autocast, channels-last), and the
logits are resized back to each slice's size *before* the activation (as the Inf-Net authors' test script does:
upsample the logits, then sigmoid). One output channel -> sigmoid; several -> softmax over classes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from covseg.engines.runtime.compile_cache import use_isa_cache
from covseg.engines.runtime.cpu import autocast_context, resolve_bf16
from covseg.engines.runtime.fusion import fold_batchnorm
from covseg.engines.runtime.onednn_fusion import fuse_conv_relu
from covseg.networks.flips import FLIPS, flip_averaged
from covseg.networks.outputs import final_logits as logits_of
from covseg.options import as_flag

__all__ = ["CPU_COMPILE_OPTIONS", "SlicePredictor", "logits_of"]

CPU_COMPILE_OPTIONS = {"freezing": True}
"""Inductor options of ``compiled=True`` on CPU: freezing (weights as constants, oneDNN-prepacked, conv + ReLU and
conv + add + ReLU fused). Without it inductor neither prepacks nor fuses the convolutions, and the compiled network
ran no faster than the eager path's own fusions (docs/benchmarks.md, 2026-12-05 night)."""


class SlicePredictor:
    """Run a 2D segmentation network on a list of slices and return probability maps.

    ``network`` takes (B, 1, H, W) float in [0, 1] and returns logits (B, C, H, W). ``image_size``: side of the
    square the network sees (``None``: native size; slices of equal shape are batched together). ``bf16``:
    ``True``/``False``, or ``"auto"`` (default) = bf16 autocast only where the device runs it fast
    (:func:`covseg.engines.runtime.cpu.bf16_fast`; on AVX2-only CPUs bf16 convolutions are ~10x slower than fp32).
    ``channels_last``: NHWC memory format (faster oneDNN convolutions on CPU). ``tta``: also run the horizontally,
    vertically and doubly flipped batch and average the four logit maps (4x the compute). ``fold_bn``: run a copy
    of the network with its BatchNorms folded into the convolutions
    (:func:`covseg.engines.runtime.fusion.fold_batchnorm`; same maps up to rounding, fewer passes over memory); the
    copy holds the weights as they are at construction. ``fuse_relu``: in that copy, on CPU and not compiled, run each
    convolution followed by a ReLU (or by a residual add and a ReLU) as one oneDNN call
    (:func:`covseg.engines.runtime.onednn_fusion.fuse_conv_relu`; fp32 maps unchanged). ``network`` stays the module
    given, for reports. ``compiled``: run it through ``torch.compile`` (inductor, fixed shapes: a short last batch is
    padded to ``batch_size``). On CPU with inductor's freezing (see :data:`CPU_COMPILE_OPTIONS`): the weights become
    constants, prepacked for oneDNN, and inductor fuses each convolution with its ReLU / residual add and the
    element-wise work between them; about 1.1x the eager path's throughput for Inf-Net in bf16, but every process pays
    the compile on its first batch (about 16 s on a 2-core Zen 5, 30 s with an empty kernel cache: graphs with
    prepacked weights are not cached), so it pays only on long runs (docs/benchmarks.md). It needs a fixed
    ``image_size`` and a C++ compiler on CPU; on CPU the kernels are cached per instruction set
    (:mod:`covseg.engines.runtime.compile_cache`). The compiled module holds the weights as they are at its first batch.
    """

    def __init__(self, network: nn.Module, image_size: int | None = 352, device: str | torch.device = "cpu",
                 batch_size: int = 8, bf16: bool | str = "auto", channels_last: bool = True,
                 tta: bool = False, fold_bn: bool = True, compiled: bool = False, fuse_relu: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.image_size = None if image_size is None else int(image_size)
        self.batch_size = int(batch_size)
        # a network that runs one precision whatever autocast says (ONNX Runtime: fp32) reports that precision
        self.bf16 = resolve_bf16(bf16, self.device) and getattr(network, "fixed_precision", None) != "fp32"
        self.channels_last = as_flag(channels_last, "channels_last")
        self.tta = as_flag(tta, "tta")
        self.network = network.to(self.device).eval()
        self._module = fold_batchnorm(self.network) if as_flag(fold_bn, "fold_bn") else self.network
        self.compiled = as_flag(compiled, "compiled")
        if as_flag(fuse_relu, "fuse_relu") and not self.compiled:  # inductor fuses these itself
            self._module = fuse_conv_relu(self._module)
        if self.channels_last:
            self._module = self._module.to(memory_format=torch.channels_last)
        if self.compiled:
            if self.image_size is None:
                raise ValueError("compiled=True needs a fixed image_size (one input shape to compile)")
            if self.device.type == "cpu":
                use_isa_cache()  # inductor's kernels kept per instruction set (compile_cache's docstring)
            self._module = torch.compile(self._module, dynamic=False)

    # ------------------------------------------------------------------------------------------------
    def predict(self, slices: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Probability maps (C, H, W) float32, one per input slice (H, W) float in [0, 1], in input order."""
        slices = [np.asarray(s) for s in slices]
        for s in slices:
            if s.ndim != 2 or s.size == 0:
                raise ValueError(f"slices must be non-empty 2D arrays (H, W), got shape {s.shape}")
        out: list[np.ndarray | None] = [None] * len(slices)
        for batch in self._batches(slices):
            for i, prob in zip(batch, self._run([slices[i] for i in batch])):
                out[i] = prob
        return out  # type: ignore[return-value]

    def _batches(self, slices: list[np.ndarray]) -> list[list[int]]:
        if self.image_size is not None:
            idx = list(range(len(slices)))
            return [idx[i:i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, s in enumerate(slices):
            by_shape.setdefault(s.shape, []).append(i)
        return [ids[i:i + self.batch_size] for ids in by_shape.values() for i in range(0, len(ids), self.batch_size)]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """fp32 logits of the batch, averaged over the flips when ``tta``."""

        def once(xi: torch.Tensor) -> torch.Tensor:
            with autocast_context(self.device, self.bf16), self._inductor_options():
                return logits_of(self._module(xi))

        return flip_averaged(once, x, FLIPS if self.tta else (None,))

    def _inductor_options(self) -> contextlib.AbstractContextManager:
        """:data:`CPU_COMPILE_OPTIONS` around a call of the compiled module on CPU (inductor compiles inside the call
        and reads its config then; ``torch.compile(options=...)`` did not turn freezing on), else nothing."""
        if not self.compiled or self.device.type != "cpu":
            return contextlib.nullcontext()
        import torch._inductor.config as inductor_config

        return inductor_config.patch(CPU_COMPILE_OPTIONS)

    def _run(self, slices: list[np.ndarray]) -> list[np.ndarray]:
        """One forward pass over ``slices`` (all the same size unless ``image_size`` is set)."""
        with torch.inference_mode():
            inputs = []
            for s in slices:
                t = torch.from_numpy(np.ascontiguousarray(s, dtype=np.float32))[None, None]
                if self.image_size is not None and t.shape[-2:] != (self.image_size, self.image_size):
                    t = F.interpolate(t, size=(self.image_size, self.image_size), mode="bilinear",
                                      align_corners=False)
                inputs.append(t)
            x = torch.cat(inputs).to(self.device)
            padded = self.compiled and len(inputs) < self.batch_size
            if padded:  # one shape, one compile: pad with copies of the last slice, dropped below
                x = torch.cat([x, x[-1:].expand(self.batch_size - len(inputs), *x.shape[1:])])
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = self._forward(x)
            logits = logits[: len(slices)] if padded else logits
            if logits.ndim != 4 or logits.shape[0] != len(slices):
                raise ValueError(f"network output shape {tuple(logits.shape)} is not (B, C, H, W) for B={len(slices)}")
            probs = []
            for k, s in enumerate(slices):
                lk = logits[k:k + 1]
                if lk.shape[-2:] != s.shape:
                    lk = F.interpolate(lk, size=s.shape, mode="bilinear", align_corners=False)
                pk = torch.sigmoid(lk) if lk.shape[1] == 1 else torch.softmax(lk, dim=1)
                probs.append(pk[0].cpu().numpy().astype(np.float32, copy=False))
            return probs
