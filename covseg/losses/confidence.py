"""BCE + Dice that leaves out the pixels a soft pseudo label is unsure of (confidence-filtered pseudo labels).

A soft pseudo label holds the labeller's probability ``p``. Pixels with ``max(p, 1 - p) >= confidence`` are
trusted and take the hard label ``p >= 0.5``; the rest are left out of both terms, so the student learns nothing
there from the labeller. A binary mask (a labelled slice) has no unsure pixel, and the loss is then MONAI's
``DiceCELoss(sigmoid=True, smooth_nr=1, smooth_dr=1)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConfidentBCEDiceLoss", "trusted_pixels"]


def trusted_pixels(target: Tensor, confidence: float) -> Tensor:
    """1 where the soft label is at least ``confidence`` sure of its class (``p >= c`` or ``p <= 1 - c``), else 0."""
    return ((target >= confidence) | (target <= 1.0 - confidence)).to(target.dtype)


class ConfidentBCEDiceLoss(nn.Module):
    """Mean BCE over the trusted pixels + soft Dice per image and channel over the trusted pixels (logits in)."""

    def __init__(self, confidence: float = 0.8, smooth: float = 1.0) -> None:
        super().__init__()
        if not 0.5 < confidence <= 1.0:
            raise ValueError(f"confidence must be in (0.5, 1], got {confidence}")
        self.confidence, self.smooth = confidence, smooth

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        weight = trusted_pixels(target, self.confidence)
        hard = (target >= 0.5).to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, hard, reduction="none")
        bce = (bce * weight).sum() / weight.sum().clamp_min(1.0)
        prob, hard = torch.sigmoid(logits) * weight, hard * weight
        dims = tuple(range(2, logits.ndim))
        overlap = (prob * hard).sum(dims)
        dice = 1.0 - (2.0 * overlap + self.smooth) / (prob.sum(dims) + hard.sum(dims) + self.smooth)
        return bce + dice.mean()
