"""JCS activation maps (Wu et al. Eq. 1-2): where the slice classifier looks when it says COVID-19.

For a stage's feature map ``X`` (before global pooling) and the predicted COVID-19 probability ``y_p``:

    w_k = mean_{i,j} d y_p / d X^k_{ij}            (Eq. 1)
    AM  = sum_k ReLU(w_k X^k)                      (Eq. 2)

``X`` is the paper's "feature map before GAP", the last stage (stride 32): :func:`activation_maps` uses it alone by
default. The stage before it (stride 16) can be added with ``stages=(0, 1)``; each map is upsampled to the input
size and scaled to [0, 1] per image, and the maps are averaged. Gradients are taken in fp32
with respect to the feature maps only (no parameter gradients are accumulated). Overlays use
:func:`covseg.reports.overlays.heatmap_overlay`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from covseg.networks.classifier import COVID, SliceClassifier


def stage_activation(probability: Tensor, features: Tensor) -> Tensor:
    """Eq. 1-2 for one stage: ``(B, h, w)`` map from ``features`` (B, K, h, w) and per-image ``probability`` (B,).

    ``features`` must be part of the graph that produced ``probability``.
    """
    (grads,) = torch.autograd.grad(probability.sum(), features, retain_graph=True)
    weights = grads.mean(dim=(2, 3), keepdim=True)  # Eq. 1
    return torch.relu(weights * features).sum(dim=1)  # Eq. 2


def _unit(maps: Tensor) -> Tensor:
    """Scale each (H, W) map of a (B, H, W) batch to [0, 1] by its maximum (all-zero maps stay zero)."""
    peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    return maps / peak


def activation_maps(network: SliceClassifier, images: Tensor, stages: Sequence[int] = (1,),
                    target: int = COVID) -> tuple[Tensor, Tensor]:
    """Activation maps ``(B, H, W)`` in [0, 1] at the input size, and the class probabilities ``(B,)``.

    ``stages`` index :meth:`SliceClassifier.forward_stages`' feature list (0: stride 16, 1: stride 32, the map
    before global pooling that the paper's Eq. 1-2 use).
    """
    network.eval()
    size = images.shape[-2:]
    with torch.enable_grad():
        logits, feats = network.forward_stages(images.float())
        prob = torch.softmax(logits.float(), dim=1)[:, target]
        maps = []
        for s in stages:
            am = stage_activation(prob, feats[s])
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
    from covseg.reports.overlays import heatmap_overlay

    return heatmap_overlay(np.asarray(grey, np.float32), activation, alpha=alpha)
