"""Losses: the structure loss really weights boundaries; deep supervision sums every map."""

from __future__ import annotations

import pytest
import torch

from covseg.engines.training.train_step import edge_from_mask
from covseg.losses import InfNetLoss, StructureLoss, boundary_weights, segmentation_loss
from covseg.networks.outputs import DeepSupervisionOutput


def _square(size: int = 64) -> torch.Tensor:
    t = torch.zeros(1, 1, size, size)
    t[..., 20:44, 20:44] = 1
    return t


def test_structure_loss_orders_predictions():
    target = _square()
    loss = StructureLoss()
    perfect, blank, inverted = loss(target * 20 - 10, target), loss(torch.zeros_like(target), target), \
        loss(10 - target * 20, target)
    assert perfect < 0.01 < blank < inverted


def test_boundary_weights_peak_at_the_edge():
    w = boundary_weights(_square())
    assert w[0, 0, 20, 20] > w[0, 0, 32, 32] and w[0, 0, 20, 20] > w[0, 0, 2, 2]
    assert torch.isclose(w[0, 0, 2, 2], torch.tensor(1.0))


def test_boundary_errors_cost_more_than_interior_errors():
    target = _square()
    logits = target * 20 - 10
    near_edge, inside = logits.clone(), logits.clone()
    near_edge[..., 20:22, 20:44] = -10  # wrong band on the boundary
    inside[..., 31:33, 20:44] = -10  # same number of wrong pixels in the middle
    loss = StructureLoss()
    assert loss(near_edge, target) > loss(inside, target)


def test_deep_supervision_adds_side_and_edge_terms():
    target = _square()
    good = target * 20 - 10
    bad = torch.zeros_like(target)
    loss = InfNetLoss()
    edge = edge_from_mask(target)
    only_final = loss(DeepSupervisionOutput(final=good, side=[], edge=None), target, edge)
    with_bad_side = loss(DeepSupervisionOutput(final=good, side=[bad, bad], edge=None), target, edge)
    with_edge = loss(DeepSupervisionOutput(final=good, side=[], edge=bad), target, edge)
    assert with_bad_side > only_final and with_edge > only_final


def test_edge_from_mask_is_a_thin_band():
    edge = edge_from_mask(_square())
    assert edge[0, 0, 32, 32] == 0 and edge[0, 0, 20, 32] == 1 and edge[0, 0, 5, 5] == 0
    assert 0 < edge.sum() < 4 * 24 * 3


def test_segmentation_loss_by_name_orders_predictions():
    target = _square()
    for name in ("structure", "bce_dice", "bce_dice_confident"):
        loss = segmentation_loss(name)
        assert loss(target * 20 - 10, target) < loss(torch.zeros_like(target), target) < loss(10 - target * 20, target)


def test_unknown_segmentation_loss_is_named_in_the_error():
    with pytest.raises(ValueError, match="'focal'"):
        segmentation_loss("focal")


def test_deep_supervision_uses_the_named_loss():
    target = _square()
    output = DeepSupervisionOutput(final=target * 4 - 2, side=[torch.zeros_like(target)], edge=None)
    dice_loss = InfNetLoss(seg_loss="bce_dice")(output, target)
    per_map = segmentation_loss("bce_dice")
    expected = per_map(output.final, target) + per_map(output.side[0], target)
    assert torch.isclose(dice_loss, expected)
    assert not torch.isclose(dice_loss, InfNetLoss()(output, target))


def test_confident_loss_is_monais_bce_dice_on_binary_masks():
    from monai.losses import DiceCELoss

    from covseg.losses.confidence import ConfidentBCEDiceLoss

    target = torch.cat([_square(), torch.zeros(1, 1, 64, 64)])  # one image without infection
    logits = torch.randn(2, 1, 64, 64) * 3
    expected = DiceCELoss(sigmoid=True, smooth_nr=1.0, smooth_dr=1.0)(logits, target)
    assert torch.isclose(ConfidentBCEDiceLoss(0.8)(logits, target), expected, atol=1e-6)


def test_confident_loss_ignores_the_pixels_the_soft_label_is_unsure_of():
    from covseg.losses.confidence import ConfidentBCEDiceLoss, trusted_pixels

    target = _square() * 0.95  # sure infection inside, sure background outside
    target[..., 30:34, :] = 0.6  # a band the labeller is unsure of
    unsure = trusted_pixels(target, 0.8) == 0
    assert unsure.sum() == 4 * 64
    loss = ConfidentBCEDiceLoss(0.8)
    logits = torch.randn(1, 1, 64, 64)
    changed_unsure, changed_sure = logits.clone(), logits.clone()
    changed_unsure[unsure] = 25.0
    changed_sure[..., 0:4, :] = 25.0  # background rows marked as infection
    assert torch.isclose(loss(changed_unsure, target), loss(logits, target))
    assert loss(changed_sure, target) > loss(logits, target) + 0.1
    with pytest.raises(ValueError, match="confidence"):
        ConfidentBCEDiceLoss(0.4)
    assert segmentation_loss("bce_dice_confident").confidence == 0.8
    assert segmentation_loss("bce_dice_confident:0.9").confidence == 0.9
    for bad in ("bce_dice_confident:0.3", "bce_dice_confident:high"):
        with pytest.raises(ValueError, match=bad):
            segmentation_loss(bad)


def test_training_step_draws_the_edge_target_from_the_half_contour_of_a_soft_label():
    from torch import nn

    from covseg.engines.training.train_step import make_train_step

    class Mapper(nn.Module):  # a deep-supervised output with an edge map
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, x: torch.Tensor) -> DeepSupervisionOutput:
            return DeepSupervisionOutput(final=x * self.scale, side=(), edge=x * self.scale)

    seen = {}

    def loss_fn(out, mask, edge):
        seen["edge"] = edge
        return out.final.mean() * 0 + out.edge.mean()

    soft = _square() * 0.7 + 0.15  # 0.85 inside, 0.15 outside
    network = Mapper()
    step = make_train_step(network, torch.optim.SGD(network.parameters(), lr=0.0), loss_fn, torch.device("cpu"),
                           image_size=64, scales=(1.0,))
    step(None, {"image": torch.rand(1, 1, 64, 64), "label": soft})
    torch.testing.assert_close(seen["edge"], edge_from_mask(_square()))
