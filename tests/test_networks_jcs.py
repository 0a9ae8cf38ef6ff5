"""The JCS segmenter: output shapes, the five side outputs and their strides, EFM / AFF structure, size budget."""

from __future__ import annotations

import io

import pytest
import torch

from covseg.networks.jcs import (
    AttentiveFeatureFusion,
    GroupAtrousModule,
    JCSSegmenter,
    SqueezeExcitation,
)
from covseg.networks.registry import get_network, network_spec


@pytest.fixture(scope="module")
def net() -> JCSSegmenter:
    torch.manual_seed(0)
    return JCSSegmenter()


@pytest.mark.parametrize("shape", [(2, 1, 64, 64), (1, 1, 72, 88)])
def test_training_output_has_final_and_four_side_maps_at_input_size(net, shape):
    out = net.train()(torch.rand(shape))
    assert out.final.shape == (shape[0], 1, *shape[-2:])
    assert len(out.side) == 4
    assert all(s.shape == out.final.shape for s in out.side)
    assert out.edge is None


def test_eval_returns_final_logits_only(net):
    logits = net.eval()(torch.rand(1, 1, 96, 64))
    assert isinstance(logits, torch.Tensor) and logits.shape == (1, 1, 96, 64)


def test_side_maps_come_from_strides_1_to_16_and_the_efm_adds_stride_32(net):
    sizes: dict[str, tuple[int, ...]] = {}
    hooks = [block.side.register_forward_hook(lambda m, i, o, k=k: sizes.__setitem__(f"side{k}", o.shape[-2:]))
             for k, block in enumerate(net.decoder, start=1)]
    hooks.append(net.efm.gam2.register_forward_hook(lambda m, i, o: sizes.__setitem__("m6", o.shape[-2:])))
    hooks.append(net.efm.gam1.register_forward_hook(lambda m, i, o: sizes.__setitem__("m5", o.shape[-2:])))
    with torch.no_grad():
        net.eval()(torch.rand(1, 1, 128, 128))
    for h in hooks:
        h.remove()
    assert [sizes[f"side{k}"][0] for k in range(1, 6)] == [128, 64, 32, 16, 8]
    assert sizes["m5"] == (8, 8) and sizes["m6"] == (4, 4)


def test_every_side_map_is_supervised_through_its_own_stage(net):
    net.train().zero_grad()
    out = net(torch.rand(1, 1, 64, 64))
    out.side[0].mean().backward()  # the coarsest side map (stage 5): reaches stage 5's head, not stage 1's
    assert net.decoder[4].side.weight.grad.abs().sum() > 0
    assert net.decoder[0].side.weight.grad is None or net.decoder[0].side.weight.grad.abs().sum() == 0
    net.zero_grad()
    net(torch.rand(1, 1, 64, 64)).final.mean().backward()  # the final map depends on every level, M6 included
    assert net.efm.gam2.transition[0].weight.grad.abs().sum() > 0
    assert net.encoder.stages[0][0].weight.grad.abs().sum() > 0


def test_group_atrous_modules_use_the_papers_rates_and_se_reduction(net):
    for gam, rates in ((net.efm.gam1, (1, 3, 6, 9)), (net.efm.gam2, (1, 2, 3, 4))):
        assert isinstance(gam, GroupAtrousModule)
        assert tuple(g[0].dilation[0] for g in gam.groups) == rates
        expanded = gam.expand[0].out_channels
        assert all(g[0].in_channels == expanded // 4 for g in gam.groups)
        assert gam.se.fc[0].out_features == expanded // 4  # reduction 4
        assert gam.reduce[0].out_channels == expanded // 2
    assert all(isinstance(b, AttentiveFeatureFusion) for b in net.decoder)


def test_squeeze_excitation_rescales_channels_in_unit_interval():
    se = SqueezeExcitation(8, reduction=4)
    x = torch.rand(2, 8, 5, 5) + 0.1
    y = se(x)
    ratio = y / x
    assert torch.all(ratio > 0) and torch.all(ratio < 1)
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio))  # one factor per channel


def test_parameter_budget_and_fp16_file_size(net):
    params = sum(p.numel() for p in net.parameters())
    encoder = sum(p.numel() for p in net.encoder.parameters())
    assert 14.7e6 < encoder < 14.8e6  # VGG16's 13 convolutions (+ batch norm)
    assert params <= 22e6
    buffer = io.BytesIO()
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}, buffer)
    assert buffer.tell() <= 45e6


def test_registry_row_builds_the_segmenter():
    spec = network_spec("jcs_segmenter")
    assert (spec.task, spec.in_channels, spec.out_channels) == ("binary", 1, 1)
    built = get_network("jcs_segmenter", efm_channels=64, decoder_channels=(8, 16, 32, 64, 64))
    assert isinstance(built, JCSSegmenter)
    assert isinstance(built.eval()(torch.rand(1, 1, 64, 64)), torch.Tensor)


def test_rejects_a_decoder_without_five_stages():
    with pytest.raises(ValueError, match="five|5"):
        JCSSegmenter(decoder_channels=(16, 32, 64))
    with pytest.raises(ValueError, match="groups"):
        GroupAtrousModule(16, 16, expanded=30, rates=(1, 2, 3, 4))


def test_bf16_autocast_forward_stays_finite(net):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net.eval()(torch.rand(1, 1, 64, 64))
    assert torch.isfinite(out.float()).all()
