"""Segmentation losses by name, so bundles and the CLI can switch the per-map loss of the recipe."""

from __future__ import annotations

from monai.losses import DiceCELoss
from torch import nn

from covseg.losses.structure import StructureLoss

SEGMENTATION_LOSSES = ("structure", "bce_dice")


def segmentation_loss(name: str = "structure") -> nn.Module:
    """``structure``: boundary-weighted BCE + weighted IoU (Inf-Net); ``bce_dice``: BCE + soft Dice (MONAI, JCS).

    Both take logits (B, 1, H, W) and a binary target of the same shape.
    """
    if name == "structure":
        return StructureLoss()
    if name == "bce_dice":
        return DiceCELoss(sigmoid=True, smooth_nr=1.0, smooth_dr=1.0)
    raise ValueError(f"unknown segmentation loss {name!r}; choose one of {', '.join(SEGMENTATION_LOSSES)}")
