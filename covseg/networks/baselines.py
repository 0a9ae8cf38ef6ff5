"""MONAI baselines (rows of covseg's registry): U-Net, U-Net++, Attention U-Net (one input channel, logits out)."""

from __future__ import annotations

from monai.networks.nets import AttentionUnet, BasicUNet, BasicUNetPlusPlus
from torch import Tensor, nn


class _LastOutput(nn.Module):
    """Wraps U-Net++ so that eval mode returns one logits tensor like every other covseg network."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        out = self.net(x)
        return out if self.training else out[-1]


def unet(in_channels: int = 1, out_channels: int = 1, features=(32, 32, 64, 128, 256, 32)) -> nn.Module:
    """MONAI BasicUNet (2D)."""
    return BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, features=features)


def unet_plus_plus(in_channels: int = 1, out_channels: int = 1, deep_supervision: bool = False) -> nn.Module:
    """MONAI BasicUNet++ (2D)."""
    net = BasicUNetPlusPlus(
        spatial_dims=2, in_channels=in_channels, out_channels=out_channels, deep_supervision=deep_supervision
    )
    return _LastOutput(net)


def attention_unet(in_channels: int = 1, out_channels: int = 1) -> nn.Module:
    """MONAI Attention U-Net (2D)."""
    return AttentionUnet(
        spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
        channels=(32, 64, 128, 256, 512), strides=(2, 2, 2, 2),
    )
