"""Restoration loss for self-supervised pre-training: MSE between the predicted and the clean slice."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from covseg.losses.deep_supervision import InfNetLoss


class SigmoidMSELoss(nn.Module):
    """Mean squared error of ``sigmoid(logits)`` against a target image in [0, 1]."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(torch.sigmoid(logits), target)


def restoration_loss(side_weight: float = 0.5) -> InfNetLoss:
    """Deep-supervised restoration loss: sigmoid-MSE on the final and every side map; the edge map is not trained."""
    return InfNetLoss(edge_weight=0.0, side_weight=side_weight, seg_loss=SigmoidMSELoss())
