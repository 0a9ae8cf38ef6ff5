"""covseg.losses: structure loss (weighted BCE + weighted IoU), edge BCE, deep supervision, BCE + Dice."""

from covseg.losses.deep_supervision import InfNetLoss
from covseg.losses.registry import segmentation_loss
from covseg.losses.structure import StructureLoss, boundary_weights

__all__ = ["InfNetLoss", "StructureLoss", "boundary_weights", "segmentation_loss"]
