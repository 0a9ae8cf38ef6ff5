"""Network foundations: output types, the registry table, VGG16, FCN8s and the prior-guided multi-class head."""

from __future__ import annotations

import pytest
import torch

from covseg.networks.fcn8s import FCN8s
from covseg.networks.multiclass import PriorGuidedSegmenter
from covseg.networks.outputs import ClassifierOutput, DeepSupervisionOutput, final_logits
from covseg.networks.registry import NETWORKS, get_network, list_networks, network_spec, register_network
from covseg.networks.vgg import VGG16Encoder


def test_final_logits_reads_every_output_form():
    a, b = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    assert final_logits(a) is a
    assert final_logits(DeepSupervisionOutput(final=b, side=[a])) is b
    assert final_logits(ClassifierOutput(logits=a)) is a
    assert final_logits([a, b]) is b
    with pytest.raises(TypeError, match="dict"):
        final_logits({"x": a})


def test_registry_rows_record_task_and_channels_and_build_matching_networks():
    assert set(list_networks("multiclass")) >= {"multiclass_unet", "multiclass_fcn8s"}
    assert "infnet" in list_networks("binary") and "infnet" not in list_networks("multiclass")
    for name in ("multiclass_unet", "multiclass_fcn8s", "infnet_ea", "unet"):
        spec = network_spec(name)
        net = get_network(name).eval()
        out = net(torch.rand(1, spec.in_channels, 64, 64))
        assert out.shape == (1, spec.out_channels, 64, 64), name


def test_register_network_adds_a_row_and_refuses_duplicates():
    name = "test-identity-row"
    try:
        register_network(name, task="multiclass", in_channels=2, out_channels=2)(lambda **kw: torch.nn.Identity())
        assert network_spec(name).task == "multiclass" and name in list_networks("multiclass")
        with pytest.raises(ValueError, match="already registered"):
            register_network(name)(lambda **kw: torch.nn.Identity())
    finally:
        NETWORKS.pop(name, None)
    with pytest.raises(ValueError, match="task"):
        register_network("x", task="detector")


def test_vgg16_stage_strides_channels_and_size():
    enc = VGG16Encoder(in_channels=2).eval()
    feats = enc(torch.rand(1, 2, 64, 64))
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512]
    assert [f.shape[-1] for f in feats] == [64, 32, 16, 8, 4]
    n = sum(p.numel() for p in enc.parameters())
    assert 14.5e6 < n < 15.0e6  # VGG16's convolutional part: 14.7 M parameters
    assert VGG16Encoder(width=0.5).stage_channels == (32, 64, 128, 256, 256)


def test_fcn8s_uses_the_skips_and_handles_odd_sizes():
    net = FCN8s(2, 3, width=0.25, fc_channels=64).eval()
    x = torch.rand(1, 2, 75, 61)
    assert net(x).shape == (1, 3, 75, 61)
    with torch.no_grad():
        base = net(x)
        net.score_pool3.bias.add_(1.0)  # the stride-8 skip reaches the output
        assert torch.allclose(net(x), base + 1.0, atol=1e-5)


def test_prior_guided_segmenter_feeds_the_prior_map_to_the_head():
    class Prior(torch.nn.Module):
        def forward(self, x):
            return (x - 0.5) * 40.0  # infection where the slice is bright

    class Head(torch.nn.Module):
        def forward(self, x):
            return x

    model = PriorGuidedSegmenter(Prior(), Head(), prior_size=32)
    x = torch.zeros(1, 1, 48, 48)
    x[..., 10:30, 10:30] = 1.0
    out = model(x)
    assert out.shape == (1, 2, 48, 48)
    assert torch.equal(out[:, :1], x)
    assert out[0, 1, 20, 20] > 0.99 and out[0, 1, 40, 40] < 0.01


def test_prior_residual_with_a_silent_head_reproduces_the_prior():
    from covseg.networks.multiclass import PriorResidual

    class Silent(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 3, *x.shape[-2:])

    x = torch.rand(2, 2, 8, 8) * 0.9 + 0.05
    probs = torch.softmax(PriorResidual(Silent())(x), dim=1)
    assert torch.allclose(probs[:, 1:].sum(1), x[:, 1], atol=1e-5)
    assert torch.allclose(probs[:, 1], probs[:, 2])
