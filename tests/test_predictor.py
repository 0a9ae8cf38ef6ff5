"""SlicePredictor: test-time flip averaging."""

import numpy as np
import torch
from torch import nn

from covseg.engines.inference.predictor import SlicePredictor


class Ramp(nn.Module):
    """Logits = image + a left-to-right ramp: not flip-equivariant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-2, 2, x.shape[-1]).expand_as(x)
        return x + ramp


def test_tta_averages_the_four_flips():
    rng = np.random.default_rng(0)
    image = rng.random((32, 32), dtype=np.float32)
    prob = SlicePredictor(Ramp(), image_size=None, tta=True, channels_last=False).predict([image])[0][0]
    # horizontal flips cancel the ramp, so the averaged logit is the image itself
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-image)), atol=1e-5)
    plain = SlicePredictor(Ramp(), image_size=None, tta=False, channels_last=False).predict([image])[0][0]
    assert np.abs(plain - prob).max() > 0.1


def test_tta_keeps_an_equivariant_network_unchanged():
    net = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[[[0.0, 1.0, 0.0], [1.0, 2.0, 1.0], [0.0, 1.0, 0.0]]]]))
    image = np.random.default_rng(1).random((24, 40), dtype=np.float32)
    a = SlicePredictor(net, image_size=None, tta=True).predict([image])[0]
    b = SlicePredictor(net, image_size=None, tta=False).predict([image])[0]
    np.testing.assert_allclose(a, b, atol=1e-5)
