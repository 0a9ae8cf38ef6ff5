"""Inference-only graph rewrites: fold each BatchNorm that follows a convolution into that convolution.

In eval mode a BatchNorm is an affine map per channel, so ``bn(conv(x))`` equals one convolution with scaled
weights and a shifted bias. Folding removes a full pass over every feature map (Inf-Net has 153 BatchNorms); in
fp32 the result is the same up to rounding (~1e-6). The rewrite works on a ``torch.fx`` trace of the network; a
network that cannot be traced (Python control flow on tensors or over proxies) gets only the pairs that sit next to
each other in a plain ``nn.Sequential``, whose order is its data flow. A trace can also run yet compute something
else (``isinstance(x, Tensor)`` is False for a proxy), so every rewrite is checked against the network on a probe
input before it is used.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from covseg.networks.outputs import final_logits

__all__ = ["agrees_on_probe", "fold_batchnorm"]

log = logging.getLogger(__name__)


def _has_batchnorm(network: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in network.modules())


def _fold_sequentials(network: nn.Module) -> int:
    """Fold, in place, each Conv2d directly followed by a BatchNorm2d inside a plain ``nn.Sequential``."""
    folded = 0
    for module in network.modules():
        if type(module).forward is not nn.Sequential.forward:
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d and bn.track_running_stats:
                module._modules[first] = fuse_conv_bn_eval(conv, bn)
                module._modules[second] = nn.Identity()
                folded += 1
    return folded


def agrees_on_probe(network: nn.Module, folded: nn.Module, probe_size: int) -> bool:
    """Whether ``folded`` gives ``network``'s final logits (fp32, rtol 1e-3) on a seeded random probe input."""
    conv = next((m for m in network.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:  # nothing a 2D probe can be shaped for
        return False
    x = torch.rand(1, conv.in_channels, probe_size, probe_size, generator=torch.Generator().manual_seed(0))
    x = x.to(conv.weight.device)
    try:
        with torch.inference_mode():
            want, got = final_logits(network(x)).float(), final_logits(folded(x)).float()
    except Exception as exc:  # noqa: BLE001 - a rewrite that fails to run is simply not used
        log.debug("folded %s fails on the probe: %s", type(network).__name__, exc)
        return False
    scale = float(want.abs().max()) if want.numel() else 0.0
    return want.shape == got.shape and torch.allclose(got, want, rtol=1e-3, atol=1e-3 * max(1.0, scale))


def _fx_folded(network: nn.Module) -> nn.Module | None:
    """The torch.fx rewrite, or None when the network cannot be traced."""
    from torch.fx.experimental.optimization import fuse  # imported here: torch.fx is not needed otherwise

    try:
        return fuse(network, inplace=False).eval()
    except Exception as exc:  # noqa: BLE001 - any tracing failure: try the plain-Sequential rewrite
        log.debug("torch.fx cannot trace %s: %s", type(network).__name__, exc)
        return None


def _sequential_folded(network: nn.Module) -> nn.Module | None:
    """A copy with the plain-Sequential pairs folded, or None when there are none."""
    folded = copy.deepcopy(network)
    return folded.eval() if _fold_sequentials(folded) else None


def fold_batchnorm(network: nn.Module, probe_size: int = 64) -> nn.Module:
    """A copy of ``network`` (in eval mode) with Conv → BatchNorm pairs folded, or ``network`` itself when there
    is nothing to fold, it is in training mode, or the folded copy disagrees with it on a ``probe_size``² input.

    The copy holds its own weights, taken now: later changes to ``network``'s weights do not reach it.
    """
    if network.training or not _has_batchnorm(network):
        return network
    for rewrite in (_fx_folded, _sequential_folded):
        folded = rewrite(network)
        if folded is not None and agrees_on_probe(network, folded, probe_size):
            return folded
    return network
