"""A model ready on the backend a run asks for (``covseg infer`` / ``covseg diagnose``).

On ONNX Runtime a bundle's network is opened straight from its cached export when the bundle's recipe names one
(:mod:`covseg.engines.runtime.onnx_recipe`), or made from the ONNX template shipped in the bundle and its weights on a
machine's first run (:mod:`covseg.engines.runtime.onnx_template`): the torch network is then never built. Otherwise the
network is built (:func:`covseg.networks.loading.load_model`) and put on the backend
(:func:`covseg.engines.runtime.onnx_runtime.backend_network`), and an export made or found so is remembered for the
next run.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path

from torch import nn

from covseg.engines.runtime.onnx_recipe import cached_bundle_runtime, remember_recipe
from covseg.engines.runtime.onnx_runtime import OnnxRuntimeNetwork, backend_network, resolve_backend
from covseg.engines.runtime.onnx_template import filled_bundle_runtime
from covseg.networks import loading
from covseg.networks.loading import (
    DEFAULT_BUNDLE,
    LoadedModel,
    bundle_meta,
    bundle_model,
    bundle_parser,
    load_weights,
    prior_bundle_of,
)

__all__ = ["bundle_backend_network", "bundle_weights_info", "is_bundles_own", "load_backend_model", "scoring_runtime",
           "weights_info"]


def load_backend_model(model: str | None = None, bundle: str | Path | None = None, device: str = "cpu",
                       backend: str = "torch", image_size: int | None = None, threads: int | None = None,
                       precision: bool | str = "auto", compiled: bool | str = False,
                       on_export: Callable[[Path], None] | None = None,
                       on_torch: Callable[[str], None] | None = None,
                       weights: str | Path | None = None) -> LoadedModel:
    """``load_model(model, bundle, device, weights)`` with its network on ``backend`` (``image_size``: an override
    of the bundle's input size); a bundle whose export is cached under its recipe, or that ships a fitting ONNX
    template, skips building the torch network (with its own weights only)."""
    bundle_dir = Path(bundle) if bundle is not None else DEFAULT_BUNDLE
    own = weights is None or is_bundles_own(weights, bundle_dir)
    if own and model is None and resolve_backend(backend, device, precision, compiled, trained=True) == "onnxruntime":
        found = _without_building(bundle_dir, image_size, threads)
        if found is not None:
            return found
    loaded = loading.load_model(model=model, bundle=bundle, device=device, **({} if own else {"weights": weights}))
    if image_size is not None:
        loaded.image_size = image_size
    if backend != "torch":
        loaded.network = backend_network(loaded.network, backend, loaded.image_size, threads, precision=precision,
                                         compiled=compiled, device=device, trained=loaded.trained,
                                         on_export=on_export, on_torch=on_torch)
        # only the bundle's own weights become its recipe: a --weights run's export would replace them in later runs
        if own and loaded.bundle_dir == bundle_dir.resolve() and isinstance(loaded.network, OnnxRuntimeNetwork):
            remember_recipe(bundle_dir, loaded.image_size, loaded.network)
    return loaded


def bundle_backend_network(network: nn.Module, weights: str | Path, bundle_root: str | Path, backend: str = "auto",
                           image_size: int = 352, precision: bool | str = "auto", compiled: bool | str = False,
                           device: str = "cpu", trained: bool = True, threads: int | None = None) -> nn.Module:
    """An inference config's ``network``: ``network`` (the config's ``network_def``) with ``weights`` on ``backend``.

    Where that is ONNX Runtime and ``weights`` are the bundle's own, the bundle's cached export or its filled template
    is opened, as ``covseg infer`` does, instead of exporting the network on a machine's first run. ``trained`` False
    (the config's ``weights`` file is not there) runs the untrained network only where ``weights`` is the bundle's
    own ``models/model.pt``; other ``weights`` (``--weights RUN/model_final.pt``) must exist."""
    bundle_dir = Path(bundle_root)
    is_own = is_bundles_own(weights, bundle_dir)
    if not trained and not is_own:  # the untrained fallback is for a bundle without its model.pt, not a typo
        raise FileNotFoundError(f"{weights}: weights file not found (--weights)")
    own = trained and is_own
    if own and resolve_backend(backend, device, precision, compiled, trained) == "onnxruntime":
        runtime = _bundle_runtime(bundle_dir, image_size, threads)
        if runtime is not None:
            return runtime
    model = (load_weights(network, weights) if trained else network).to(device).eval()
    placed = backend_network(model, backend, image_size, threads, precision=precision, compiled=compiled,
                             device=device, trained=trained)
    if own and isinstance(placed, OnnxRuntimeNetwork):
        remember_recipe(bundle_dir, image_size, placed)
    return placed


def is_bundles_own(weights: str | Path, bundle_dir: str | Path) -> bool:
    """``weights`` is the bundle's own ``models/model.pt`` (the weights its recipe and ONNX template are made from)."""
    return Path(weights).resolve() == (Path(bundle_dir) / "models" / "model.pt").resolve()


def weights_info(weights: str | Path | None) -> dict[str, str]:
    """Other weights as the reports (and ``--continue`` / ``--skip_done``'s comparison) name them: the file, its size
    and time; ``{}`` for ``None``."""
    if weights is None:
        return {}
    stat = Path(weights).stat()
    when = datetime.datetime.fromtimestamp(stat.st_mtime, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return {"weights": f"{Path(weights).resolve()} ({stat.st_size} bytes, modified {when})"}


def bundle_weights_info(weights: str | Path, bundle_root: str | Path) -> dict[str, str]:
    """An inference config's ``--weights`` as ``covseg infer --weights`` names it in the reports, so ``--skip_done``
    does not keep volumes made with other weights; ``{}`` for the bundle's own weights."""
    if is_bundles_own(weights, bundle_root) or not Path(weights).is_file():
        return {}
    return weights_info(weights)


def _without_building(bundle_dir: Path, image_size: int | None, threads: int | None) -> LoadedModel | None:
    """The bundle's model on ONNX Runtime from its cached export or its template; ``None`` where neither serves."""
    try:
        parser = bundle_parser(bundle_dir)
        meta = bundle_meta(parser, bundle_dir)
        prior_dir = prior_bundle_of(bundle_dir, meta)
        if prior_dir is not None:  # as load_bundle says it of a chain
            meta["prior_version"] = bundle_meta(bundle_parser(prior_dir), prior_dir).get("version")
    except Exception:  # noqa: BLE001 - load_model reads the bundle again and says what is wrong with it
        return None
    size = int(image_size if image_size is not None else meta.get("image_size", 352))
    runtime = _bundle_runtime(bundle_dir, size, threads, parser)
    if runtime is None:
        return None
    loaded = bundle_model(runtime, bundle_dir, meta)
    loaded.image_size = size
    return loaded


def _bundle_runtime(bundle_dir: Path, image_size: int, threads: int | None, parser=None) -> OnnxRuntimeNetwork | None:
    """The bundle's export without building its network: cached under its recipe, else filled from its template."""
    return (cached_bundle_runtime(bundle_dir, image_size, threads, parser=parser)
            or filled_bundle_runtime(bundle_dir, image_size, threads))


def scoring_runtime(loaded: LoadedModel, backend: str = "auto", device: str = "cpu", threads: int | None = None,
                    precision: bool | str = "auto") -> OnnxRuntimeNetwork | None:
    """A loaded bundle's network on ONNX Runtime where ``backend`` resolves to it (fp32 on a CPU without native
    bf16, :func:`covseg.engines.runtime.onnx_runtime.resolve_backend`), else ``None``: for a model whose torch network
    is kept too (the classifier's activation maps need its gradients). Its export comes from the bundle's recipe or
    template when the model holds the bundle's own weights, else it is exported now."""
    if resolve_backend(backend, device, precision, False, loaded.trained) != "onnxruntime":
        return None
    bundle_dir = loaded.bundle_dir
    if bundle_dir is not None and (loaded.weights is None or not is_bundles_own(loaded.weights, bundle_dir)):
        bundle_dir = None  # other weights in the bundle's network (a training run's): not the bundle's export
    if bundle_dir is not None:
        runtime = _bundle_runtime(bundle_dir, loaded.image_size, threads)
        if runtime is not None:
            return runtime
    network = backend_network(loaded.network, backend, loaded.image_size, threads, device=device,
                              trained=loaded.trained)
    if not isinstance(network, OnnxRuntimeNetwork):
        return None
    if bundle_dir is not None:
        remember_recipe(bundle_dir, loaded.image_size, network)
    return network
