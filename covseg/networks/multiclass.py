"""Infection-guided multi-class labelling (Inf-Net paper, Sec. III-D, Fig. 6).

The binary model's infection map, concatenated with the CT slice, feeds a multi-class network that labels
background / GGO / consolidation. The heads are registry rows (``multiclass_unet``, ``multiclass_fcn8s``: 2 input
channels, 3 classes); :class:`PriorGuidedSegmenter` chains a binary network and a head for inference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.networks.nets import BasicUNet
from torch import Tensor, nn

from covseg.networks.fcn8s import FCN8s
from covseg.networks.flips import FLIPS, flip_averaged
from covseg.networks.outputs import final_logits
from covseg.options import as_flag
from covseg.transforms.class_merge import merge_small_class

CLASS_NAMES = ("background", "ggo", "consolidation")


class PriorResidual(nn.Module):
    """Adds the infection map's logit to a head's class logits: background 0, each of the K foreground classes
    ``logit(prior) - log K``, so that an all-zero head output reproduces the binary model's infection probability
    split evenly between the foreground classes; the head learns the split and corrections to the map."""

    def __init__(self, head: nn.Module, prior_channel: int = 1, eps: float = 1e-3) -> None:
        super().__init__()
        self.head, self.prior_channel, self.eps = head, prior_channel, eps

    def forward(self, x: Tensor) -> Tensor:
        logits = final_logits(self.head(x))
        p = x[:, self.prior_channel:self.prior_channel + 1].float().clamp(self.eps, 1 - self.eps)
        k = logits.shape[1] - 1
        # log K: in a trace as a tensor op (K is a traced size there), in eager runs as before, to the last bit
        log_k = torch.log(torch.ones_like(p) * k) if torch.jit.is_tracing() else math.log(k)
        fg = torch.log(p) - torch.log1p(-p) - log_k
        base = torch.cat([torch.zeros_like(fg), fg.expand(-1, k, -1, -1)], dim=1)
        return logits + base.to(logits.dtype)


def multiclass_unet(in_channels: int = 2, out_channels: int = 3,
                    features: tuple[int, ...] = (32, 32, 64, 128, 256, 32), prior_residual: bool = False) -> nn.Module:
    """Multi-class U-Net head (MONAI BasicUNet, 2D): slice + infection map -> class logits
    (``prior_residual``: plus the map's logit, :class:`PriorResidual`)."""
    net = BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, features=features)
    return PriorResidual(net) if prior_residual else net


def multiclass_fcn8s(in_channels: int = 2, out_channels: int = 3, width: float = 1.0,
                     fc_channels: int = 1024, prior_residual: bool = False) -> nn.Module:
    """FCN8s head (VGG16 from scratch): slice + infection map -> class logits (``prior_residual`` as above)."""
    net = FCN8s(in_channels, out_channels, width=width, fc_channels=fc_channels)
    return PriorResidual(net) if prior_residual else net


class PriorGuidedSegmenter(nn.Module):
    """Binary infection network + multi-class head: (B, 1, H, W) slice in [0, 1] -> (B, C, H, W) class logits.

    The binary network's sigmoid map (its final logits, at ``prior_size``² when given, else at the input size) is
    resized to the input and concatenated with the slice as the head's second channel. The binary network is
    frozen: only the head's weights belong to a multi-class bundle. ``merge_below`` > 0: on a slice where class
    ``merge_class`` wins less than that fraction of the pixels, it is folded into ``merge_into``
    (:func:`covseg.transforms.class_merge.merge_small_class`; the bundle's consolidation rule), after
    ``flip_average`` (the whole chain, binary map and head, run on the four flips of the input and averaged).
    """

    def __init__(self, prior: nn.Module, head: nn.Module, prior_size: int | None = None, merge_below: float = 0.0,
                 merge_class: int = 2, merge_into: int = 1, flip_average: bool = False) -> None:
        super().__init__()
        self.prior, self.head, self.prior_size = prior, head, prior_size
        self.flip_average = as_flag(flip_average, "flip_average")  # '--flip_average false' arrives as a string
        self.merge_below, self.merge_class, self.merge_into = float(merge_below), merge_class, merge_into
        for p in self.prior.parameters():
            p.requires_grad_(False)

    def infection_map(self, x: Tensor) -> Tensor:
        """The binary model's infection probability (B, 1, H, W) at the input's size."""
        self.prior.eval()
        size = x.shape[-2:]
        xp = x if self.prior_size is None else F.interpolate(x, size=(self.prior_size,) * 2, mode="bilinear",
                                                              align_corners=False)
        with torch.no_grad():
            logits = final_logits(self.prior(xp)).float()
        # always resized: at equal sizes bilinear resizing is the identity, and no branch on a shape keeps the
        # network traceable (the fast ONNX export)
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return torch.sigmoid(logits).to(x.dtype)

    def head_logits(self, x: Tensor) -> Tensor:
        """The head's class logits for slice + infection map, one pass."""
        return final_logits(self.head(torch.cat([x, self.infection_map(x)], dim=1)))

    def forward(self, x: Tensor) -> Tensor:
        logits = flip_averaged(self.head_logits, x, FLIPS if self.flip_average else (None,))
        return merge_small_class(logits, self.merge_class, self.merge_into, self.merge_below)

    def state_dict_head(self) -> dict[str, Tensor]:
        """The head's weights only (what ``models/model.pt`` of a multi-class bundle holds)."""
        return self.head.state_dict()
