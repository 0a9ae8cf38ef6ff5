"""JCS activation maps (Wu et al. Eq. 1-2, Grad-CAM): where the slice classifier looks when it says COVID-19.

For a stage's feature map ``X`` (before global pooling) and the predicted COVID-19 probability ``y_p``:

    w_k = mean_{i,j} d y_p / d X^k_{ij}            (Eq. 1)
    AM  = ReLU(sum_k w_k X^k)                      (Grad-CAM, the method the paper cites for its maps, [18])

The paper prints Eq. 2 with the ReLU inside the sum, ``AM = sum_k ReLU(w_k X^k)`` (``relu="channel"`` here). The
last stage's maps come out of a ReLU (``X >= 0``) and feed global pooling and a linear layer, so ``w_k X^k_ij`` is
exactly channel ``k``'s share of the COVID-19 logit margin at ``(i, j)`` (times ``y_p (1 - y_p)``). The printed
form keeps only the channels that argue for COVID-19 and drops those that argue against it, so it lights up
healthy lung where the net evidence is against COVID-19; the ReLU over the sum (``relu="sum"``, the default) keeps
the places whose net evidence is for COVID-19, as Grad-CAM does.

``X`` is the paper's "feature map before GAP", the last stage (stride 32): :func:`activation_maps` uses it alone by
default. The stage before it (stride 16) can be added with ``stages=(0, 1)``; each map is upsampled to the input
size and scaled to [0, 1] per image, and the maps are averaged. Gradients are taken in fp32
with respect to the feature maps only (no parameter gradients are accumulated). Overlays use
:func:`covseg.reports.pictures.heatmap.heatmap_overlay`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from covseg.networks.classifier import COVID, SliceClassifier

RELU = ("sum", "channel")
"""Where the ReLU goes: over the weighted sum (Grad-CAM) or on each channel's term (Eq. 2 as printed)."""


def stage_activation(probability: Tensor, features: Tensor, relu: str = "sum") -> Tensor:
    """Eq. 1 weights and the map for one stage: ``(B, h, w)`` from ``features`` (B, K, h, w) and per-image
    ``probability`` (B,); ``relu`` is ``"sum"`` (``ReLU(sum_k w_k X^k)``) or ``"channel"`` (``sum_k ReLU(w_k X^k)``).

    ``features`` must be part of the graph that produced ``probability``.
    """
    if relu not in RELU:
        raise ValueError(f"relu must be one of {RELU}, got {relu!r}")
    (grads,) = torch.autograd.grad(probability.sum(), features, retain_graph=True)
    weighted = grads.mean(dim=(2, 3), keepdim=True) * features  # Eq. 1
    return torch.relu(weighted.sum(dim=1)) if relu == "sum" else torch.relu(weighted).sum(dim=1)


def _unit(maps: Tensor) -> Tensor:
    """Scale each (H, W) map of a (B, H, W) batch to [0, 1] by its maximum (all-zero maps stay zero)."""
    peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    return maps / peak


def activation_maps(network: SliceClassifier, images: Tensor, stages: Sequence[int] = (1,),
                    target: int = COVID, relu: str = "sum") -> tuple[Tensor, Tensor]:
    """Activation maps ``(B, H, W)`` in [0, 1] at the input size, and the class probabilities ``(B,)``.

    ``stages`` index :meth:`SliceClassifier.forward_stages`' feature list (0: stride 16, 1: stride 32, the map
    before global pooling that the paper's Eq. 1-2 use); ``relu``: see :func:`stage_activation`.
    """
    network.eval()
    size = images.shape[-2:]
    with torch.enable_grad():
        logits, feats = network.forward_stages(images.float())
        prob = torch.softmax(logits.float(), dim=1)[:, target]
        maps = []
        for s in stages:
            am = stage_activation(prob, feats[s], relu)
            am = F.interpolate(am[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
            maps.append(_unit(am.clamp_min(0)))
    return torch.stack(maps).mean(dim=0).detach(), prob.detach()


def slice_activation(network: SliceClassifier, grey: np.ndarray, image_size: int = 224) -> tuple[np.ndarray, float]:
    """Activation map of one (H, W) grey slice in [0, 1], returned at the slice's own size, and P(COVID-19)."""
    x = torch.as_tensor(np.asarray(grey, np.float32))[None, None]
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    am, prob = activation_maps(network, x)
    am = F.interpolate(am[:, None], size=grey.shape, mode="bilinear", align_corners=False)[0, 0]
    return am.clamp(0, 1).numpy(), float(prob[0])


def activation_overlay(grey: np.ndarray, activation: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """uint8 RGB of the activation map over the grey slice (covseg's heat-map overlay)."""
    from covseg.reports.pictures.heatmap import heatmap_overlay

    return heatmap_overlay(np.asarray(grey, np.float32), activation, alpha=alpha)
