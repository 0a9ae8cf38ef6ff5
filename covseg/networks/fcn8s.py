"""FCN-8s (Long et al., CVPR 2015) on covseg's VGG16 encoder, trained from scratch.

pool5 (stride 32) -> two "fully connected" layers as convolutions -> class scores; upsampled x2 and added to the
scores of pool4 (stride 16), upsampled x2 and added to the scores of pool3 (stride 8), upsampled x8 to the input.
Departures from the original, for 2 CPU cores and arbitrary slice sizes: fc6 is a 3x3 (not 7x7) convolution with
``fc_channels`` (1024, not 4096) channels, and every upsampling is bilinear interpolation to the skip's exact size
(the original learns the x2 steps and crops a 100-pixel padding).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from covseg.networks.vgg import VGG16Encoder


def _resize(x: Tensor, like: Tensor | tuple[int, int]) -> Tensor:
    size = like.shape[-2:] if isinstance(like, Tensor) else like
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class FCN8s(nn.Module):
    """FCN-8s: input (B, in_channels, H, W) in [0, 1], output logits (B, out_channels, H, W)."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: float = 1.0, fc_channels: int = 1024,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.encoder = VGG16Encoder(in_channels, width=width)
        c3, c4, c5 = self.encoder.stage_channels[2:]
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.fc = nn.Sequential(
            nn.Conv2d(c5, fc_channels, 3, padding=1), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
            nn.Conv2d(fc_channels, fc_channels, 1), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
        )
        self.score_fc = nn.Conv2d(fc_channels, out_channels, 1)
        self.score_pool4 = nn.Conv2d(c4, out_channels, 1)
        self.score_pool3 = nn.Conv2d(c3, out_channels, 1)
        for m in (self.fc[0], self.fc[3], self.score_fc):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        for m in (self.score_pool4, self.score_pool3):  # skips start silent, as in the staged FCN training
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        _, _, s3, s4, s5 = self.encoder(x)
        pool3, pool4, pool5 = self.pool(s3), self.pool(s4), self.pool(s5)
        score = self.score_fc(self.fc(pool5))
        score = _resize(score, pool4) + self.score_pool4(pool4)
        score = _resize(score, pool3) + self.score_pool3(pool3)
        return _resize(score, x.shape[-2:])
