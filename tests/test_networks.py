"""Networks: registry, Inf-Net shapes and ablation switches, Res2Net strides, model loading."""

from __future__ import annotations

import pytest
import torch

from covseg.networks.infnet import ABLATIONS, InfNet, ReverseAttention
from covseg.networks.loading import load_weights
from covseg.networks.outputs import DeepSupervisionOutput
from covseg.networks.registry import get_network, list_networks
from covseg.networks.res2net import Res2Net50


def test_registry_lists_infnet_ablations_and_baselines():
    names = set(list_networks())
    assert set(ABLATIONS) <= names
    assert {"unet", "unetpp", "attention_unet"} <= names
    with pytest.raises(KeyError, match="unknown network"):
        get_network("no-such-net")


def test_res2net_stage_strides_and_channels():
    feats = Res2Net50().eval()(torch.rand(1, 1, 64, 64))
    assert [f.shape[1] for f in feats] == list(Res2Net50.stage_channels)
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]


def test_infnet_parameter_count_matches_paper_scale():
    n = sum(p.numel() for p in InfNet().parameters())
    assert 28e6 < n < 34e6  # the paper's Inf-Net has about 31 M parameters


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_ablation_outputs(name):
    net = get_network(name)
    switches = ABLATIONS[name]
    out = net.train()(torch.rand(2, 1, 64, 64))
    assert isinstance(out, DeepSupervisionOutput)
    assert out.final.shape == (2, 1, 64, 64)
    assert (out.edge is not None) == switches["use_ea"]
    expected_side = 3 if switches["use_ra"] else (1 if switches["use_ea"] else 0)
    assert len(out.side) == expected_side
    logits = net.eval()(torch.rand(1, 1, 96, 80))
    assert isinstance(logits, torch.Tensor) and logits.shape == (1, 1, 96, 80)


def test_reverse_attention_uses_the_coarser_map():
    net = InfNet().eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        base = net(x)
        net.global_head.head[-1].bias.add_(5.0)  # shift the global map; RA cascade must carry it to the output
        shifted = net(x)
    assert not torch.allclose(base, shifted)


def test_reverse_attention_erases_the_features_where_the_coarser_map_is_sure():
    """RA weights the side feature by 1 - sigmoid(coarser map): where the coarser map already marks infection the
    feature is erased, so the residual RA adds cannot depend on it; where the map is sure of background the feature
    passes. (The test above only sees the coarser map carried through the residual sum, which a forward attention,
    or none, would carry as well.)"""
    torch.manual_seed(0)
    ra = ReverseAttention(8, 16, 0, depth=3, kernel=3).eval()
    features = [torch.rand(1, 8, 16, 16, generator=torch.Generator().manual_seed(k)) * 4 for k in (1, 2)]

    def residual(feature: torch.Tensor, logit: float) -> torch.Tensor:
        coarse = torch.full((1, 1, 8, 8), logit)
        with torch.no_grad():
            out = ra(feature, coarse, None)
        assert out.shape == (1, 1, 16, 16)
        return out - logit  # the coarser map (upsampled: a constant) is added back

    found, background = (torch.stack([residual(f, logit) for f in features]) for logit in (30.0, -30.0))
    torch.testing.assert_close(found[0], found[1], rtol=0, atol=1e-5)
    assert float((background[0] - background[1]).abs().max()) > 1e-2


@pytest.mark.parametrize("name", ["unet", "unetpp", "attention_unet"])
def test_baselines_eval_returns_one_map(name):
    out = get_network(name).eval()(torch.rand(1, 1, 64, 64))
    assert out.shape == (1, 1, 64, 64)


def test_load_weights_accepts_fp16_state(tmp_path):
    net = get_network("unet", features=(4, 4, 8, 8, 16, 4))
    path = tmp_path / "w.pt"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}, path)
    other = load_weights(get_network("unet", features=(4, 4, 8, 8, 16, 4)), path)
    for (k, a), b in zip(net.state_dict().items(), other.state_dict().values()):
        assert torch.allclose(a.float(), b, atol=1e-2), k
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_weights(net, tmp_path / "missing.pt")


def test_load_weights_takes_a_training_checkpoints_network(tmp_path):
    """``--weights RUN/checkpoint_3.pt`` gave ``AttributeError: 'collections.OrderedDict' object has no attribute
    'is_floating_point'``: a checkpoint holds the network beside the optimiser and engine states."""
    net = get_network("unet", features=(4, 4, 8, 8, 16, 4))
    optimiser = torch.optim.Adam(net.parameters())
    torch.save({"network": net.state_dict(), "optimizer": optimiser.state_dict(), "trainer": {"epoch": 3}},
               tmp_path / "checkpoint_3.pt")
    other = load_weights(get_network("unet", features=(4, 4, 8, 8, 16, 4)), tmp_path / "checkpoint_3.pt")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))
    torch.save({"epoch": 3, "losses": [0.5]}, tmp_path / "history.pt")
    with pytest.raises(ValueError, match="history.pt: holds no network weights"):
        load_weights(net, tmp_path / "history.pt")
