"""Load a ready-to-run network: by registry name, from a MONAI bundle folder, or the shipped default."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from covseg.networks.registry import get_network

log = logging.getLogger(__name__)

DEFAULT_BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "infnet"
DEFAULT_NETWORK = "infnet"


@dataclass
class LoadedModel:
    """A network in eval mode plus what inference needs to feed it."""

    network: nn.Module
    name: str
    image_size: int = 352
    out_channels: int = 1
    trained: bool = False
    meta: dict = field(default_factory=dict)
    bundle_dir: Path | None = None  # the bundle it was loaded from (resolved), if any
    weights: Path | None = None  # the weights file loaded (resolved), if any: the bundle's model.pt or another


def load_model(model: str | None = None, bundle: str | Path | None = None, device: str = "cpu",
               weights: str | Path | None = None) -> LoadedModel:
    """Resolve ``--model NAME`` / ``--bundle PATH`` (or neither: the shipped Inf-Net bundle) to a network;
    ``weights``: another weights file (or training checkpoint) for the bundle's network."""
    if model is not None and bundle is not None:
        raise ValueError("give either a model name or a bundle, not both")
    if weights is not None:
        if model is not None:
            raise ValueError("weights go with a bundle's network, not with a model name")
        return load_bundle(Path(bundle) if bundle is not None else DEFAULT_BUNDLE, device, weights)
    if model is not None:
        net = get_network(model)
        log.warning("network %r is freshly initialised (no weights): outputs are not meaningful", model)
        return LoadedModel(net.to(device).eval(), name=model)
    bundle_dir = Path(bundle) if bundle is not None else DEFAULT_BUNDLE
    if bundle is None and not (bundle_dir / "models" / "model.pt").exists():
        log.warning("no shipped weights at %s: using a freshly initialised %s", bundle_dir, DEFAULT_NETWORK)
        return LoadedModel(get_network(DEFAULT_NETWORK).to(device).eval(), name=DEFAULT_NETWORK)
    return load_bundle(bundle_dir, device)


def load_bundle(bundle_dir: str | Path, device: str = "cpu", weights: str | Path | None = None) -> LoadedModel:
    """Build ``network_def`` from a bundle's inference config and load ``models/model.pt`` (or ``weights``, e.g. a
    training run's checkpoint of the same network) into it."""
    bundle_dir = Path(bundle_dir)
    weights = Path(weights) if weights is not None else bundle_dir / "models" / "model.pt"
    parser = bundle_parser(bundle_dir, weights)
    net = load_weights(parser.get_parsed_content("network_def"), weights)
    meta = bundle_meta(parser, bundle_dir)
    if meta.get("prior_bundle"):  # a multi-class head: chain it after the binary bundle it names
        from covseg.networks.multiclass import PriorGuidedSegmenter

        prior = load_bundle(prior_bundle_of(bundle_dir, meta), device)
        net = PriorGuidedSegmenter(prior.network, net, prior_size=prior.image_size,
                                   merge_below=float(meta.get("merge_below", 0.0)),
                                   flip_average=bool(meta.get("flip_average", False)))
        meta["prior_version"] = prior.meta.get("version")
    loaded = bundle_model(net.to(device).eval(), bundle_dir, meta)
    loaded.weights = weights.resolve()
    return loaded


def bundle_parser(bundle_dir: Path, weights: Path | None = None):
    """A MONAI ``ConfigParser`` of the bundle's inference config (``bundle_root`` set); both files must exist."""
    from monai.bundle import ConfigParser

    config_file = bundle_dir / "configs" / "inference.yaml"
    for path in (config_file, weights if weights is not None else bundle_dir / "models" / "model.pt"):
        if not path.exists():
            raise FileNotFoundError(f"{path}: not found (is {bundle_dir} a covseg bundle?)")
    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser["bundle_root"] = str(bundle_dir)
    return parser


def bundle_meta(parser, bundle_dir: Path) -> dict:
    """The config's ``covseg`` section, with the bundle's version from ``metadata.json`` unless it names one."""
    meta = dict(parser.get("covseg", {}) or {})
    metadata = bundle_dir / "configs" / "metadata.json"
    if metadata.is_file() and "version" not in meta:  # the bundle's version, shown in reports
        meta["version"] = str(json.loads(metadata.read_text(encoding="utf-8")).get("version", "")) or None
    return meta


def prior_bundle_of(bundle_dir: Path, meta: dict) -> Path | None:
    """The binary bundle a multi-class bundle chains after (``covseg.prior_bundle``, relative to it), if any."""
    return (bundle_dir / str(meta["prior_bundle"])).resolve() if meta.get("prior_bundle") else None


def bundle_model(network: nn.Module, bundle_dir: Path, meta: dict) -> LoadedModel:
    """A :class:`LoadedModel` of a bundle's trained ``network`` (or a stand-in for it, e.g. its ONNX export)."""
    return LoadedModel(
        network,
        name=str(meta.get("network", bundle_dir.name)),
        image_size=int(meta.get("image_size", 352)),
        out_channels=int(meta.get("out_channels", 1)),
        trained=True,
        meta=dict(meta),
        bundle_dir=bundle_dir.resolve(),
    )


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The network state dict stored in ``path``: a weights file, or a training checkpoint (``checkpoint_N.pt``)
    whose ``network`` entry holds it."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("network"), dict):
        state = state["network"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: holds no network weights (neither a state dict nor a checkpoint with a "
                         "'network' entry)")
    return state


def load_weights(network: nn.Module, weights: str | Path) -> nn.Module:
    """Load a (possibly fp16) state dict file, or a training checkpoint's network, into ``network`` as fp32; return
    the network in eval mode."""
    weights = Path(weights)
    if not weights.exists():
        raise FileNotFoundError(f"{weights}: weights file not found")
    state = read_state(weights)
    network.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return network.eval()
