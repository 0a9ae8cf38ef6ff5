"""Inf-Net's total loss: structure loss on the final and every side map, plus BCE on the edge map (Eq. 5)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from covseg.losses.registry import segmentation_loss
from covseg.networks.outputs import DeepSupervisionOutput


class InfNetLoss(nn.Module):
    """L = L_seg(final) + sum L_seg(side maps) + edge_weight * BCE(edge); plain tensors get L_seg only.

    ``seg_loss`` names L_seg (:func:`covseg.losses.registry.segmentation_loss`): the paper's structure loss by default;
    a loss module (logits, target) → scalar is used as it is.
    """

    def __init__(self, edge_weight: float = 1.0, side_weight: float = 1.0,
                 seg_loss: str | nn.Module = "structure") -> None:
        super().__init__()
        self.seg = seg_loss if isinstance(seg_loss, nn.Module) else segmentation_loss(seg_loss)
        self.edge_weight, self.side_weight = edge_weight, side_weight

    def _map_loss(self, logits: Tensor, mask: Tensor) -> Tensor:
        """L_seg of one map, in fp32 (maps may come out of bf16 autocast)."""
        return self.seg(logits.float(), mask.float())

    def forward(self, output: DeepSupervisionOutput | Tensor | list[Tensor], mask: Tensor,
                edge: Tensor | None = None) -> Tensor:
        if isinstance(output, Tensor):
            return self._map_loss(output, mask)
        if not isinstance(output, DeepSupervisionOutput):  # e.g. U-Net++ deep supervision list, last map is final
            return sum(self._map_loss(o, mask) for o in output) / len(output)
        loss = self._map_loss(output.final, mask)
        for side in output.side:
            loss = loss + self.side_weight * self._map_loss(side, mask)
        if output.edge is not None and edge is not None and self.edge_weight > 0:
            loss = loss + self.edge_weight * F.binary_cross_entropy_with_logits(output.edge.float(), edge.float())
        return loss
