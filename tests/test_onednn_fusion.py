"""Conv -> ReLU and conv -> add -> ReLU as one oneDNN call: same maps in fp32, close in bf16, left alone otherwise."""

import numpy as np
import pytest
import torch
from torch import nn
from utils import with_running_stats

from covseg.engines.inference.predictor import SlicePredictor
from covseg.engines.runtime.fusion import fold_batchnorm
from covseg.engines.runtime.onednn_fusion import FusedConvReLU, fuse_conv_relu
from covseg.networks.outputs import final_logits
from covseg.networks.registry import get_network, network_spec

BF16_NATIVE = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _fused_count(module: nn.Module) -> int:
    return sum(isinstance(m, FusedConvReLU) for m in module.modules())


class Residual(nn.Module):
    """relu(conv(x) + x), relu(conv(x)), and a conv whose output is used twice (not fusable)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, padding=2,
                                                                                               dilation=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(x) + x)
        y = nn.functional.relu(self.b(y))
        z = self.c(y)
        return torch.relu(z + z)


@pytest.mark.parametrize("name", ["infnet", "jcs_classifier", "jcs_segmenter", "multiclass_fcn8s"])
def test_fused_network_matches_in_fp32(name):
    torch.manual_seed(0)
    folded = fold_batchnorm(with_running_stats(get_network(name)))
    fused = fuse_conv_relu(folded)
    assert fused is not folded and _fused_count(fused) > 0 and _fused_count(folded) == 0
    x = torch.rand(2, network_spec(name).in_channels, 64, 64)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        folded, fused = (m.to(memory_format=memory_format) for m in (folded, fused))
        with torch.inference_mode():
            want = final_logits(folded(x.contiguous(memory_format=memory_format)))
            got = final_logits(fused(x.contiguous(memory_format=memory_format)))
        # fp32 both, summed in another order: rounding is relative to the sums' size, and the random 153-BatchNorm
        # Inf-Net reaches logits of 7e4, where oneDNN's AVX2 kernels differ by 0.24 (3.4e-6 of the largest logit;
        # a flat atol of 1e-5 failed there). A missing ReLU or add moves the maps by the order of the logits.
        scale = float(want.abs().max())
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * max(scale, 1.0))


def test_residual_add_is_fused_and_a_shared_output_is_not():
    torch.manual_seed(0)
    net = Residual().eval()
    fused = fuse_conv_relu(net)
    assert _fused_count(fused) == 2  # a and b; c's output feeds the add twice
    assert isinstance(fused.c, nn.Conv2d)
    x = torch.randn(3, 4, 20, 20)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), net(x), rtol=1e-5, atol=1e-5)
    assert isinstance(net.a, nn.Conv2d) and _fused_count(net) == 0  # the network itself is left as it was


def test_bf16_autocast_close_to_unfused():
    """bf16 (oneDNN's kernels where the CPU has them, the unfused steps where not): close to the unfused net."""
    torch.manual_seed(0)
    folded = fold_batchnorm(with_running_stats(get_network("infnet"))).to(memory_format=torch.channels_last)
    fused = fuse_conv_relu(folded).to(memory_format=torch.channels_last)
    x = torch.rand(2, 1, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = final_logits(folded(x)).float(), final_logits(fused(x)).float()
    assert got.shape == want.shape and torch.isfinite(got).all()
    scale = float(want.abs().max())
    assert float((got - want).abs().max()) < 0.05 * scale, "bf16 rounding only"
    assert float(((got > 0) == (want > 0)).float().mean()) > 0.99


@pytest.mark.parametrize("channels_last", [False, True])
def test_residual_add_in_bf16_in_either_memory_format(channels_last):
    """oneDNN's fused add needs channels-last input in bf16; NCHW input takes the unfused steps."""
    torch.manual_seed(0)
    net = Residual().eval()
    fused = fuse_conv_relu(net)
    x = torch.randn(2, 4, 12, 12)
    if channels_last:
        net, fused = (m.to(memory_format=torch.channels_last) for m in (net, fused))
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = net(x).float(), fused(x).float()
    torch.testing.assert_close(got, want, rtol=0.05, atol=0.05)


def test_left_alone_when_nothing_to_fuse_or_training():
    plain = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sigmoid()).eval()
    assert fuse_conv_relu(plain) is plain
    training = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()).train()
    assert fuse_conv_relu(training) is training


class Uncopyable(nn.Sequential):
    """A module that cannot be deep-copied (as one wrapping an ONNX Runtime session)."""

    def __deepcopy__(self, memo: dict) -> None:
        raise TypeError("cannot pickle this session")


def test_uncopyable_module_needs_no_copy():
    """Nothing is deep-copied: a module without convolutions is left alone, one with them is traced and fused."""
    plain = Uncopyable(nn.Sigmoid()).eval()
    assert fuse_conv_relu(plain) is plain
    net = Uncopyable(nn.Conv2d(1, 2, 3), nn.ReLU()).eval()
    fused = fuse_conv_relu(net)
    assert _fused_count(fused) == 1
    x = torch.rand(1, 1, 8, 8)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), net(x))
    predictor = SlicePredictor(Uncopyable(nn.Conv2d(1, 1, 3, padding=1), nn.ReLU()), image_size=16, bf16=False)
    assert predictor.predict([np.zeros((20, 20), np.float32)])[0].shape == (1, 20, 20)


def test_untraceable_network_gets_its_sequential_pairs():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Identity(), nn.ReLU(inplace=True))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.body(x)
            return y if float(y.mean()) > -1 else -y  # a value-dependent branch: torch.fx cannot trace it

    net = Branchy().eval()
    fused = fuse_conv_relu(net)
    assert isinstance(fused.body[0], FusedConvReLU) and isinstance(fused.body[2], nn.Identity)
    x = torch.rand(1, 1, 9, 9)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), net(x))


def test_slice_predictor_fuses_by_default_with_the_same_fp32_maps():
    torch.manual_seed(0)
    net = with_running_stats(get_network("infnet"))
    on = SlicePredictor(net, image_size=64, bf16=False)
    off = SlicePredictor(net, image_size=64, bf16=False, fuse_relu=False)
    assert _fused_count(on._module) > 0 and _fused_count(off._module) == 0
    slices = [np.random.default_rng(i).random((50, 60), dtype=np.float32) for i in range(3)]
    for a, b in zip(on.predict(slices), off.predict(slices)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_bf16_weights_follow_in_place_updates():
    """A traced result shares its weights: after an in-place update (an optimizer step) the bf16 cast is redone."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU()).eval()
    fused = fuse_conv_relu(net)
    x = torch.rand(1, 1, 8, 8)

    def bf16_out(module: nn.Module) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return module(x).float()

    before = bf16_out(fused)
    with torch.no_grad():
        net[0].weight.mul_(-1.0)
    after = bf16_out(fused)
    torch.testing.assert_close(after, bf16_out(net), rtol=0.02, atol=0.02)
    assert not torch.allclose(after, before)


@pytest.mark.skipif(BF16_NATIVE, reason="this CPU has oneDNN bf16 kernels; the fallback is for those without")
def test_bf16_without_native_kernels_runs_the_unfused_steps():
    conv = nn.Conv2d(2, 2, 3, padding=1).eval()
    fused = FusedConvReLU(conv)
    x = torch.rand(1, 2, 8, 8)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(fused(x), torch.relu(conv(x)))
