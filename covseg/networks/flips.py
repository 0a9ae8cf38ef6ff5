"""Flip averaging (test-time augmentation): a forward pass run on the flipped inputs, outputs flipped back and
averaged. Used by :class:`covseg.engines.inference.predictor.SlicePredictor` (``tta``) and inside
:class:`covseg.networks.multiclass.PriorGuidedSegmenter` (``flip_average``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["FLIPS", "flip_averaged"]

FLIPS: tuple[tuple[int, ...] | None, ...] = (None, (-1,), (-2,), (-2, -1))
"""As is, horizontally, vertically and doubly flipped (the last two axes of a (B, C, H, W) batch)."""


def flip_averaged(forward: Callable[[Tensor], Tensor], x: Tensor,
                  flips: Sequence[tuple[int, ...] | None] = FLIPS) -> Tensor:
    """The mean over ``flips`` of ``forward(flipped x)`` flipped back, in fp32 (``flips=(None,)``: one plain pass)."""
    total = None
    for dims in flips:
        out = forward(x if dims is None else torch.flip(x, dims)).float()
        out = out if dims is None else torch.flip(out, dims)
        total = out if total is None else total + out
    if total is None:
        raise ValueError("flip_averaged needs at least one flip")
    return total / len(flips)
