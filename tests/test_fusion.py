"""BatchNorm folding for inference: same outputs in fp32, a fallback for untraceable networks."""

import numpy as np
import pytest
import torch
from torch import nn
from utils import with_running_stats

from covseg.engines.inference.predictor import SlicePredictor
from covseg.engines.runtime.fusion import fold_batchnorm
from covseg.networks.outputs import final_logits
from covseg.networks.registry import get_network, list_networks, network_spec


def _count_bn(network: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in network.modules())


@pytest.mark.parametrize("name", ["infnet", "jcs_segmenter", "multiclass_fcn8s", "jcs_classifier"])
def test_folded_network_matches_in_fp32(name):
    torch.manual_seed(0)
    network = with_running_stats(get_network(name))
    folded = fold_batchnorm(network)
    assert folded is not network
    assert _count_bn(network) > 0 and _count_bn(folded) < _count_bn(network)
    x = torch.rand(2, network_spec(name).in_channels, 64, 64)
    with torch.inference_mode():
        a, b = network(x), folded(x)
    a = a if isinstance(a, torch.Tensor) else a.logits
    b = b if isinstance(b, torch.Tensor) else b.logits
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_other_network_families_are_folded_or_left_alone():
    """Whatever a network is, folding returns something that runs and gives the network's logits: a folded copy
    (fewer BatchNorms) or the network itself."""
    others = ["infnet_backbone", "unet", "unetpp", "attention_unet", "fcn8s", "multiclass_unet"]
    assert set(others) <= set(list_networks())
    for name in others:
        torch.manual_seed(0)
        network = with_running_stats(get_network(name))
        folded = fold_batchnorm(network)
        assert isinstance(folded, nn.Module), name
        assert not folded.training, name
        left_alone, before, after = folded is network, _count_bn(network), _count_bn(folded)
        assert left_alone or after < before, f"{name}: a copy with {after} of {before} BatchNorms left"
        x = torch.rand(1, network_spec(name).in_channels, 64, 64, generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            a, b = final_logits(network(x)), final_logits(folded(x))
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4, msg=name)


class DataDependent(nn.Module):
    """Python control flow on a tensor's value: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return y if float(y.mean()) > 0 else -y


def test_untraceable_or_training_networks_are_returned_unchanged():
    net = DataDependent().eval()
    assert fold_batchnorm(net) is net
    plain = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    assert fold_batchnorm(plain.train()) is plain
    conv = nn.Conv2d(1, 1, 3).eval()
    assert fold_batchnorm(conv) is conv  # nothing to fold
    no_conv = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).eval()
    assert fold_batchnorm(no_conv) is no_conv


def test_predictor_folds_by_default_and_keeps_the_given_network():
    torch.manual_seed(1)
    network = with_running_stats(get_network("infnet"))
    images = [np.random.default_rng(k).random((48, 56), dtype=np.float32) for k in range(3)]
    folded = SlicePredictor(network, image_size=64, bf16=False, batch_size=2)
    plain = SlicePredictor(network, image_size=64, bf16=False, batch_size=2, fold_bn=False)
    assert folded.network is network and plain.network is network
    assert _count_bn(folded._module) == 0 and _count_bn(plain._module) > 0
    for a, b in zip(folded.predict(images), plain.predict(images)):
        # a random 153-BatchNorm network amplifies rounding (trained Inf-Net: 6e-6); an unfolded or misfolded BN
        # moves the maps by far more
        np.testing.assert_allclose(a, b, atol=2e-3)
