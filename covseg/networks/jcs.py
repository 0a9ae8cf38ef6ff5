"""The JCS segmenter (Wu et al., "JCS", Sec. IV-B): VGG16 encoder + Enhanced Feature Module + Attentive Feature
Fusion decoder with five deeply supervised side outputs.

Data flow (strides relative to the input):
    E1 (/1) … E5 (/16): the five VGG16 blocks (each after the first opens with a stride-2 max pooling)
    E5 ─► GAM(rates 1, 3, 6, 9) ─► M5 (/16) ─► max pooling ─► GAM(rates 1, 2, 3, 4) ─► M6 (/32)   (the EFM)
    M6 ─► AFF with M5 ─► D5 ─► AFF with E4 ─► D4 ─► … ─► D1; each D_i gives a side map; D1's is the final map.

Widths are narrower than the paper's (which keeps 512 channels from conv5_3 on), so that the shipped fp16 weights
stay under 45 MB: the EFM works at ``efm_channels`` and the decoder stages at ``decoder_channels``. The encoder is
covseg's VGG16 (:mod:`covseg.networks.vgg`) at full width (64, 128, 256, 512, 512) with batch normalisation,
because covseg trains from scratch (ImageNet weights are not available offline).

In training mode ``forward`` returns a deep-supervision output (final map plus the four coarser side maps, all
logits at input size); in eval mode only the final logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from covseg.networks.outputs import DeepSupervisionOutput
from covseg.networks.vgg import VGG16Encoder


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, dilation: int = 1) -> nn.Sequential:
    """Convolution (same padding) + batch norm + ReLU."""
    pad = dilation * (kernel // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SqueezeExcitation(nn.Module):
    """Channel attention: global average → linear (C → C/r) → ReLU → linear → sigmoid, multiplied per channel."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels),
                                nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        weights = self.fc(x.mean(dim=(2, 3)))
        return x * weights[:, :, None, None].to(x.dtype)


class GroupAtrousModule(nn.Module):
    """GAM (Fig. 7a): 1×1 expansion, four channel groups each with its own atrous rate, SE, a 1×1 convolution
    halving the channels, and a 3×3 transition convolution to ``cout`` channels."""

    def __init__(self, cin: int, cout: int, expanded: int, rates: Sequence[int], reduction: int = 4) -> None:
        super().__init__()
        if expanded % len(rates):
            raise ValueError(f"expanded channels {expanded} do not split into {len(rates)} groups")
        group = expanded // len(rates)
        self.expand = conv_bn_relu(cin, expanded, 1)
        self.groups = nn.ModuleList(conv_bn_relu(group, group, 3, dilation=r) for r in rates)
        self.se = SqueezeExcitation(expanded, reduction)
        self.reduce = conv_bn_relu(expanded, expanded // 2, 1)
        self.transition = conv_bn_relu(expanded // 2, cout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.expand(x)
        parts = torch.chunk(x, len(self.groups), dim=1)
        x = torch.cat([conv(part) for conv, part in zip(self.groups, parts)], dim=1)
        return self.transition(self.reduce(self.se(x)))


class EnhancedFeatureModule(nn.Module):
    """EFM: GAM on E5 (enhanced M5, stride 16), max pooling, GAM again (the extra coarser M6, stride 32)."""

    def __init__(self, cin: int, channels: int, rates: Sequence[Sequence[int]] = ((1, 3, 6, 9), (1, 2, 3, 4)),
                 reduction: int = 4) -> None:
        super().__init__()
        self.gam1 = GroupAtrousModule(cin, channels, 2 * channels, rates[0], reduction)
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.gam2 = GroupAtrousModule(channels, channels, 2 * channels, rates[1], reduction)

    def forward(self, e5: Tensor) -> tuple[Tensor, Tensor]:
        m5 = self.gam1(e5)
        return m5, self.gam2(self.pool(m5))


def _up(x: Tensor, like: Tensor) -> Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class AttentiveFeatureFusion(nn.Module):
    """AFF (Fig. 7b): both inputs halved by 1×1 convolutions, the coarser one upsampled, concatenated, SE, 3×3
    transition; then concatenated with the upsampled coarser map itself (the coarser level counts twice), SE,
    3×3 transition to ``cout``; a 1×1 convolution gives the stage's side map."""

    def __init__(self, enc_channels: int, dec_channels: int, cout: int, reduction: int = 4) -> None:
        super().__init__()
        half_e, half_d = enc_channels // 2, dec_channels // 2
        self.reduce_enc = conv_bn_relu(enc_channels, half_e, 1)
        self.reduce_dec = conv_bn_relu(dec_channels, half_d, 1)
        self.se1 = SqueezeExcitation(half_e + half_d, reduction)
        self.transition1 = conv_bn_relu(half_e + half_d, half_e + half_d)
        self.se2 = SqueezeExcitation(half_e + half_d + dec_channels, reduction)
        self.transition2 = conv_bn_relu(half_e + half_d + dec_channels, cout)
        self.side = nn.Conv2d(cout, 1, 1)

    def forward(self, enc: Tensor, dec: Tensor) -> tuple[Tensor, Tensor]:
        dec_up = _up(dec, enc)
        fused = torch.cat([self.reduce_enc(enc), _up(self.reduce_dec(dec), enc)], dim=1)
        fused = self.transition1(self.se1(fused))
        out = self.transition2(self.se2(torch.cat([fused, dec_up], dim=1)))
        return out, self.side(out)


class JCSSegmenter(nn.Module):
    """JCS segmenter; input (B, C, H, W) in [0, 1], output logits (B, 1, H, W) (side maps too when training)."""

    def __init__(self, in_channels: int = 1, efm_channels: int = 128,
                 decoder_channels: Sequence[int] = (16, 32, 64, 128, 128),
                 rates: Sequence[Sequence[int]] = ((1, 3, 6, 9), (1, 2, 3, 4)), reduction: int = 4) -> None:
        super().__init__()
        if len(decoder_channels) != 5:
            raise ValueError(f"decoder_channels needs one width per VGG block (5), got {len(decoder_channels)}")
        self.register_buffer("mean", torch.tensor(0.5), persistent=False)
        self.register_buffer("std", torch.tensor(0.25), persistent=False)
        self.encoder = VGG16Encoder(in_channels)
        stage_channels = self.encoder.stage_channels
        self.efm = EnhancedFeatureModule(stage_channels[4], efm_channels, rates, reduction)
        enc = (*stage_channels[:4], efm_channels)  # E1..E4, then the EFM-enhanced M5
        dec_in = (*decoder_channels[1:], efm_channels)  # stage i fuses with D_{i+1} (M6 at stage 5)
        self.decoder = nn.ModuleList(AttentiveFeatureFusion(e, d, c, reduction)
                                     for e, d, c in zip(enc, dec_in, decoder_channels))

    def forward(self, x: Tensor) -> Tensor | DeepSupervisionOutput:
        size = x.shape[-2:]
        e1, e2, e3, e4, e5 = self.encoder((x - self.mean) / self.std)
        m5, dec = self.efm(e5)
        sides = []
        for block, enc in zip(reversed(self.decoder), (m5, e4, e3, e2, e1)):
            dec, side = block(enc, dec)
            sides.append(side)
        final = sides[-1]  # stride 1: already at input size
        if not self.training:
            return final
        coarse = [F.interpolate(s, size=size, mode="bilinear", align_corners=False) for s in sides[:-1]]
        return DeepSupervisionOutput(final=final, side=coarse)

