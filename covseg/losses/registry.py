"""Segmentation losses by name, so bundles and the CLI can switch the per-map loss of the recipe."""

from __future__ import annotations

from monai.losses import DiceCELoss
from torch import nn

from covseg.losses.confidence import ConfidentBCEDiceLoss
from covseg.losses.structure import StructureLoss

SEGMENTATION_LOSSES = ("structure", "bce_dice", "bce_dice_confident")


def segmentation_loss(name: str = "structure") -> nn.Module:
    """``structure``: boundary-weighted BCE + weighted IoU (Inf-Net); ``bce_dice``: BCE + soft Dice (MONAI, JCS);
    ``bce_dice_confident``: BCE + Dice over the pixels a soft pseudo label is at least 0.8 sure of
    (:class:`covseg.losses.confidence.ConfidentBCEDiceLoss`; on binary masks the same as ``bce_dice``);
    ``bce_dice_confident:0.9`` names another confidence.

    All take logits (B, 1, H, W) and a target of the same shape (binary, or soft for ``bce_dice_confident``).
    """
    if name == "structure":
        return StructureLoss()
    if name == "bce_dice":
        return DiceCELoss(sigmoid=True, smooth_nr=1.0, smooth_dr=1.0)
    base, _, confidence = name.partition(":")
    if base == "bce_dice_confident":
        try:
            return ConfidentBCEDiceLoss(confidence=float(confidence or 0.8))
        except ValueError as exc:
            raise ValueError(f"segmentation loss {name!r}: {exc}") from None
    raise ValueError(f"unknown segmentation loss {name!r}; choose one of {', '.join(SEGMENTATION_LOSSES)}")
