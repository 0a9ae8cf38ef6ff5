"""One table of covseg's networks: name -> where its factory lives, its task and its channels.

A row is ``"module:factory"`` plus fixed keyword arguments; the module is imported on first use, so the table
depends on no network module (one-way) and a new family is one new row. Bundles build networks by
``_target_: covseg.networks.registry.get_network`` and ``name``; :func:`network_spec` tells callers what a
network is for (``binary``: one sigmoid channel; ``multiclass``: C softmax channels; ``classifier``: class logits)
and how many channels it takes (the multi-class heads take the CT slice plus the binary infection map).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

TASKS = ("binary", "multiclass", "classifier")


@dataclass(frozen=True)
class NetworkSpec:
    """Where a network's factory is (``"module:attribute"``), what it predicts and its default channels."""

    target: str | Callable[..., nn.Module]
    task: str = "binary"
    in_channels: int = 1
    out_channels: int = 1
    kwargs: dict = field(default_factory=dict)

    def factory(self) -> Callable[..., nn.Module]:
        """The factory callable, imported on first use."""
        if callable(self.target):
            return self.target
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


def _infnet(variant: str) -> NetworkSpec:
    return NetworkSpec("covseg.networks.infnet:build_infnet", "binary", 1, 1, {"variant": variant})


NETWORKS: dict[str, NetworkSpec] = {
    # Inf-Net and the paper's ablation rows (Table IV; switches in covseg.networks.infnet.ABLATIONS)
    **{name: _infnet(name) for name in ("infnet_backbone", "infnet_ea", "infnet_ppd", "infnet_ra", "infnet_ra_ea",
                                        "infnet_ppd_ra", "infnet")},
    # MONAI baselines
    "unet": NetworkSpec("covseg.networks.baselines:unet"),
    "unetpp": NetworkSpec("covseg.networks.baselines:unet_plus_plus"),
    "attention_unet": NetworkSpec("covseg.networks.baselines:attention_unet"),
    # VGG16 family and the multi-class heads (Inf-Net Sec. III-D: CT slice + infection map -> 3 classes)
    "fcn8s": NetworkSpec("covseg.networks.fcn8s:FCN8s", "binary", 1, 1),
    "multiclass_unet": NetworkSpec("covseg.networks.multiclass:multiclass_unet", "multiclass", 2, 3),
    "multiclass_fcn8s": NetworkSpec("covseg.networks.multiclass:multiclass_fcn8s", "multiclass", 2, 3),
    # JCS (Wu et al.): VGG16 + EFM + AFF segmenter with five deeply supervised side maps
    "jcs_segmenter": NetworkSpec("covseg.networks.jcs:JCSSegmenter", "binary", 1, 1),
    # JCS slice classifier (Wu et al. Sec. III-A): Res2Net-50 + GAP + linear, COVID-19 / non-COVID logits
    "jcs_classifier": NetworkSpec("covseg.networks.classifier:slice_classifier", "classifier", 1, 2),
}


def network_spec(name: str) -> NetworkSpec:
    """The table row of ``name``; a clear error listing the known names otherwise."""
    try:
        return NETWORKS[name]
    except KeyError:
        raise KeyError(f"unknown network {name!r}; known: {', '.join(sorted(NETWORKS))}") from None


def get_network(name: str, **kwargs) -> nn.Module:
    """Build network ``name``: segmentation networks take (B, C_in, H, W) in [0, 1] and return logits."""
    spec = network_spec(name)
    return spec.factory()(**{**spec.kwargs, **kwargs})


def list_networks(task: str | None = None) -> list[str]:
    """Names of every network (of one ``task`` when given)."""
    return sorted(n for n, s in NETWORKS.items() if task is None or s.task == task)


def register_network(name: str, task: str = "binary", in_channels: int = 1,
                     out_channels: int = 1) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a row at run time (plugins, benchmarks); built-in networks are rows of :data:`NETWORKS`."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in NETWORKS:
            raise ValueError(f"network {name!r} is already registered")
        NETWORKS[name] = NetworkSpec(factory, task, in_channels, out_channels)
        return factory

    return wrap
