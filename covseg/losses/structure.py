"""Inf-Net's segmentation loss: boundary-weighted BCE + weighted IoU (the F3Net "structure loss")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def boundary_weights(target: Tensor, kernel: int = 31, gain: float = 5.0) -> Tensor:
    """1 + gain * |local mean - target|: pixels near a boundary (hard pixels) weigh up to ``1 + gain``."""
    local_mean = F.avg_pool2d(target, kernel, stride=1, padding=kernel // 2, count_include_pad=False)
    return 1.0 + gain * (local_mean - target).abs()


class StructureLoss(nn.Module):
    """Weighted BCE + weighted IoU on logits (B, 1, H, W) against a binary target of the same shape.

    The BCE is computed per pixel (``reduction="none"``) before weighting, so the boundary weights really act.
    """

    def __init__(self, kernel: int = 31, gain: float = 5.0) -> None:
        super().__init__()
        self.kernel, self.gain = kernel, gain

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits, target = logits.float(), target.float()
        weight = boundary_weights(target, self.kernel, self.gain)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        wbce = (weight * bce).sum(dim=(2, 3)) / weight.sum(dim=(2, 3))
        prob = torch.sigmoid(logits)
        inter = (prob * target * weight).sum(dim=(2, 3))
        union = ((prob + target) * weight).sum(dim=(2, 3))
        wiou = 1.0 - (inter + 1.0) / (union - inter + 1.0)
        return (wbce + wiou).mean()
