"""Fold a class that covers too little of a slice into another (postprocessing of C-class logits; torch only).

The multi-class head marks a few consolidation pixels on most slices that have none, and a slice without
consolidation scores Dice 1 only when none is predicted; relabelling such small amounts as GGO was chosen by
cross-validation on the labelled slices (docs/benchmarks.md, "consolidation on slices without any").
:class:`covseg.networks.multiclass.PriorGuidedSegmenter` applies it, so every inference path gets it.
"""

from __future__ import annotations

import torch

__all__ = ["MERGED_MARGIN", "merge_small_class"]

MERGED_MARGIN = 50.0
"""How far below the receiving class a merged class's logit is put (its softmax share becomes about e^-50)."""


def _logaddexp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.logaddexp``; in a trace, the same as max + log1p(exp(-|a - b|)), which the ONNX exporter knows."""
    if torch.jit.is_tracing():
        return torch.maximum(a, b) + torch.log1p(torch.exp(-(a - b).abs()))
    return torch.logaddexp(a, b)


def merge_small_class(logits: torch.Tensor, cls: int, into: int, min_fraction: float) -> torch.Tensor:
    """Logits (B, C, H, W) with class ``cls`` folded into class ``into`` on every slice where the argmax says
    ``cls`` on less than ``min_fraction`` of the pixels: the receiving logit becomes ``logaddexp`` of the two, so
    its softmax probability is the sum of both, and ``cls`` keeps about none. Other slices are unchanged; so is
    everything when ``min_fraction`` is 0. Applying it twice changes nothing more. No data-dependent branch, so a
    traced or exported network keeps it."""
    if min_fraction <= 0:
        return logits
    if not torch.jit.is_tracing() and (logits.ndim != 4 or cls == into
                                       or not (0 <= cls < logits.shape[1] and 0 <= into < logits.shape[1])):
        raise ValueError(f"cannot merge class {cls} into {into} of logits shaped {tuple(logits.shape)}")
    share = (logits.argmax(dim=1) == cls).flatten(1).float().mean(dim=1)
    small = (share < min_fraction)[:, None, None]
    merged = _logaddexp(logits[:, into].float(), logits[:, cls].float()).to(logits.dtype)
    channels = list(logits.unbind(dim=1))
    channels[into] = torch.where(small, merged, channels[into])
    channels[cls] = torch.where(small, merged - MERGED_MARGIN, channels[cls])
    return torch.stack(channels, dim=1)
