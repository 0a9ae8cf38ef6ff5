"""Inf-Net (Fan et al., IEEE TMI 2020): Res2Net-50 + parallel partial decoder + reverse attention + edge attention.

Data flow (strides relative to the input):
    x1 (/4, 256) ─► edge attention (EA) ─► edge map S_e and edge features e_att
    x2 (/8), x3 (/16), x4 (/32) ─► receptive-field blocks ─► PPD ─► global map S_g (/8)
    S_g ─► RA on x4 (+ e_att) ─► S_5 ─► RA on x3 (+ e_att) ─► S_4 ─► RA on x2 (+ e_att) ─► S_3 = final map

Switches reproduce the paper's ablation rows (Table IV): ``use_ppd``, ``use_ra``, ``use_ea``.
In training mode ``forward`` returns a :class:`~covseg.networks.outputs.DeepSupervisionOutput` (all maps, logits at
input size); in eval mode only the final logits, like every covseg network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from covseg.networks.outputs import DeepSupervisionOutput
from covseg.networks.res2net import Res2Net50, conv_bn_relu

InfNetOutput = DeepSupervisionOutput  # former name; side maps: global map first, then the RA outputs but the last


def _conv(cin: int, cout: int, kernel: tuple[int, int] | int = 3, dilation: int = 1) -> nn.Sequential:
    """Convolution + batch norm for the receptive-field block (no activation, as in RFB)."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    pad = (dilation * (kh // 2), dilation * (kw // 2))
    return nn.Sequential(nn.Conv2d(cin, cout, (kh, kw), padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout))


class ReceptiveFieldBlock(nn.Module):
    """Four branches of growing receptive field (1, 3, 5, 7 with dilations), fused and added to a shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        branches = [nn.Sequential(_conv(cin, cout, 1))]
        for k in (3, 5, 7):
            branches.append(nn.Sequential(
                _conv(cin, cout, 1), _conv(cout, cout, (1, k)), _conv(cout, cout, (k, 1)),
                _conv(cout, cout, 3, dilation=k),
            ))
        self.branches = nn.ModuleList(branches)
        self.fuse = _conv(4 * cout, cout, 3)
        self.shortcut = _conv(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        fused = self.fuse(torch.cat([b(x) for b in self.branches], dim=1))
        return F.relu(fused + self.shortcut(x), inplace=True)


def _up(x: Tensor, like: Tensor) -> Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class ParallelPartialDecoder(nn.Module):
    """PPD: aggregates the three high-level features (strides 32, 16, 8) into a coarse global map at stride 8."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = channels
        self.up_h_to_m = conv_bn_relu(c, c)
        self.up_h_to_l = conv_bn_relu(c, c)
        self.up_m_to_l = conv_bn_relu(c, c)
        self.up_h_cat = conv_bn_relu(c, c)
        self.up_m_cat = conv_bn_relu(2 * c, 2 * c)
        self.fuse_m = conv_bn_relu(2 * c, 2 * c)
        self.fuse_l = conv_bn_relu(3 * c, 3 * c)
        self.head = nn.Sequential(conv_bn_relu(3 * c, 3 * c), nn.Conv2d(3 * c, 1, 1))

    def forward(self, high: Tensor, mid: Tensor, low: Tensor) -> Tensor:
        mid_gated = self.up_h_to_m(_up(high, mid)) * mid
        low_gated = self.up_h_to_l(_up(high, low)) * self.up_m_to_l(_up(mid, low)) * low
        mid_cat = self.fuse_m(torch.cat([mid_gated, self.up_h_cat(_up(high, mid))], dim=1))
        low_cat = self.fuse_l(torch.cat([low_gated, self.up_m_cat(_up(mid_cat, low))], dim=1))
        return self.head(low_cat)


class EdgeAttention(nn.Module):
    """EA: low-level features → edge features (e_att) and a one-channel edge map supervised by edge BCE."""

    def __init__(self, cin: int, channels: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu(cin, channels, 1), conv_bn_relu(channels, channels), conv_bn_relu(channels, channels)
        )
        self.head = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feats = self.features(x)
        return feats, self.head(feats)


class ReverseAttention(nn.Module):
    """RA: weights a side feature by 1 - sigmoid(coarser map), adds edge features, predicts a residual map."""

    def __init__(self, cin: int, channels: int, edge_channels: int, depth: int, kernel: int) -> None:
        super().__init__()
        self.reduce = conv_bn_relu(cin, channels, 1)
        layers: list[nn.Module] = [conv_bn_relu(channels + edge_channels, channels, kernel)]
        layers += [conv_bn_relu(channels, channels, kernel) for _ in range(depth - 2)]
        layers.append(nn.Conv2d(channels, 1, 1 if kernel == 5 else 3, padding=0 if kernel == 5 else 1))
        self.refine = nn.Sequential(*layers)

    def forward(self, feature: Tensor, coarse: Tensor, edge_feats: Tensor | None) -> Tensor:
        prior = _up(coarse, feature)
        weighted = self.reduce(feature * (1.0 - torch.sigmoid(prior)))
        if edge_feats is not None:
            weighted = torch.cat([weighted, _up(edge_feats, feature)], dim=1)
        return self.refine(weighted) + prior


class InfNet(nn.Module):
    """Inf-Net with ablation switches; input (B, C, H, W) in [0, 1], output logits (B, 1, H, W)."""

    def __init__(self, in_channels: int = 1, rfb_channels: int = 32, edge_channels: int = 64,
                 use_ppd: bool = True, use_ra: bool = True, use_ea: bool = True) -> None:
        super().__init__()
        self.use_ppd, self.use_ra, self.use_ea = use_ppd, use_ra, use_ea
        self.register_buffer("mean", torch.tensor(0.5), persistent=False)
        self.register_buffer("std", torch.tensor(0.25), persistent=False)
        self.backbone = Res2Net50(in_channels=in_channels)
        c1, c2, c3, c4 = Res2Net50.stage_channels
        self.rfb2, self.rfb3, self.rfb4 = (ReceptiveFieldBlock(c, rfb_channels) for c in (c2, c3, c4))
        if use_ppd:
            self.global_head: nn.Module = ParallelPartialDecoder(rfb_channels)
        else:  # "backbone" rows: one convolution over the top feature brought to stride 8
            self.global_head = nn.Sequential(conv_bn_relu(rfb_channels, rfb_channels), nn.Conv2d(rfb_channels, 1, 1))
        self.edge = EdgeAttention(c1, edge_channels) if use_ea else None
        e = edge_channels if use_ea else 0
        if use_ra:
            self.ra4 = ReverseAttention(c4, 256, e, depth=4, kernel=5)
            self.ra3 = ReverseAttention(c3, 64, e, depth=3, kernel=3)
            self.ra2 = ReverseAttention(c2, 64, e, depth=3, kernel=3)
        elif use_ea:  # "+EA" without RA: edge features refine the global map once
            self.edge_refine = nn.Sequential(conv_bn_relu(rfb_channels + e, 64), nn.Conv2d(64, 1, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor | DeepSupervisionOutput:
        size = x.shape[-2:]
        x1, x2, x3, x4 = self.backbone((x - self.mean) / self.std)
        f2, f3, f4 = self.rfb2(x2), self.rfb3(x3), self.rfb4(x4)
        global_map = self.global_head(f4, f3, f2) if self.use_ppd else self.global_head(_up(f4, f2))
        edge_feats, edge_map = None, None
        if self.edge is not None:  # in eval mode only the features: the edge map is a training target
            edge_feats, edge_map = self.edge(x1) if self.training else (self.edge.features(x1), None)
        maps = [global_map]
        if self.use_ra:
            s5 = self.ra4(x4, global_map, edge_feats)
            s4 = self.ra3(x3, s5, edge_feats)
            maps += [s5, s4, self.ra2(x2, s4, edge_feats)]
        elif edge_feats is not None:
            maps.append(self.edge_refine(torch.cat([f2, _up(edge_feats, f2)], dim=1)) + global_map)
        if not self.training:  # the final map only, brought to the input size
            return F.interpolate(maps[-1], size=size, mode="bilinear", align_corners=False)
        maps = [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps]
        edge_up = None if edge_map is None else F.interpolate(edge_map, size=size, mode="bilinear",
                                                              align_corners=False)
        return DeepSupervisionOutput(final=maps[-1], side=maps[:-1], edge=edge_up)


ABLATIONS: dict[str, dict[str, bool]] = {
    "infnet_backbone": dict(use_ppd=False, use_ra=False, use_ea=False),  # No.1
    "infnet_ea": dict(use_ppd=False, use_ra=False, use_ea=True),  # No.2
    "infnet_ppd": dict(use_ppd=True, use_ra=False, use_ea=False),  # No.3
    "infnet_ra": dict(use_ppd=False, use_ra=True, use_ea=False),  # No.4
    "infnet_ra_ea": dict(use_ppd=False, use_ra=True, use_ea=True),  # No.5
    "infnet_ppd_ra": dict(use_ppd=True, use_ra=True, use_ea=False),  # No.6
    "infnet": dict(use_ppd=True, use_ra=True, use_ea=True),  # No.7, the full model
}


def build_infnet(variant: str = "infnet", **kwargs) -> InfNet:
    """Inf-Net or one of its ablation rows (:data:`ABLATIONS`); ``kwargs`` override the switches."""
    try:
        switches = ABLATIONS[variant]
    except KeyError:
        raise KeyError(f"unknown Inf-Net variant {variant!r}; known: {', '.join(ABLATIONS)}") from None
    return InfNet(**{**switches, **kwargs})
