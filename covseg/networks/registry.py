"""One registry of segmentation networks, addressed by name (``get_network("infnet")``)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_network(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a network factory under ``name``."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"network {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return wrap


def get_network(name: str, **kwargs) -> nn.Module:
    """Build the network registered as ``name``; networks take (B, 1, H, W) in [0, 1] and return logits."""
    _load_builtin()
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown network {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    return factory(**kwargs)


def list_networks() -> list[str]:
    """Names of every registered network."""
    _load_builtin()
    return sorted(_REGISTRY)


def _load_builtin() -> None:
    from covseg.networks import baselines, infnet  # noqa: F401  (register on import)
