"""Softmax losses for C-class segmentation, chosen by name (class-index targets of shape (B, 1, H, W))."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import DiceCELoss, DiceLoss
from torch import Tensor, nn

MULTICLASS_LOSSES = ("ce_dice", "ce", "dice")


class CrossEntropy(nn.Module):
    """Cross-entropy of logits (B, C, H, W) against class indices (B, 1, H, W), optionally class-weighted."""

    def __init__(self, weight: Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return nn.functional.cross_entropy(logits.float(), target[:, 0].long(), weight=self.weight)


def multiclass_loss(name: str = "ce_dice", class_weights: Sequence[float] | None = None,
                    include_background: bool = False) -> nn.Module:
    """``ce_dice``: cross-entropy + soft Dice (MONAI DiceCELoss, softmax); ``ce``: cross-entropy; ``dice``: soft
    Dice (MONAI DiceLoss, softmax). ``class_weights`` weigh the cross-entropy; the Dice term skips the background
    unless ``include_background``. Every loss takes logits (B, C, H, W) and class indices (B, 1, H, W).
    """
    weight = None if class_weights is None else torch.as_tensor(list(class_weights), dtype=torch.float32)
    if name == "ce_dice":
        if weight is not None or not include_background:
            return _DiceCE(weight, include_background)
        return DiceCELoss(softmax=True, to_onehot_y=True, smooth_nr=1.0, smooth_dr=1.0)
    if name == "ce":
        return CrossEntropy(weight)
    if name == "dice":
        return DiceLoss(softmax=True, to_onehot_y=True, include_background=include_background, smooth_nr=1.0,
                        smooth_dr=1.0)
    raise ValueError(f"unknown multi-class loss {name!r}; choose one of {', '.join(MULTICLASS_LOSSES)}")


class _DiceCE(nn.Module):
    """Weighted cross-entropy over all classes + soft Dice over the chosen classes (MONAI's DiceCELoss applies
    ``include_background`` to both terms and its CE weights must cover every class; this keeps them apart)."""

    def __init__(self, weight: Tensor | None, include_background: bool) -> None:
        super().__init__()
        self.ce = CrossEntropy(weight)
        self.dice = DiceLoss(softmax=True, to_onehot_y=True, include_background=include_background, smooth_nr=1.0,
                             smooth_dr=1.0)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.ce(logits, target) + self.dice(logits.float(), target)
