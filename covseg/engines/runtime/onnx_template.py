"""A bundle's ONNX graph shipped without its weights, filled from ``models/model.pt`` on a machine's first run.

The first ONNX Runtime run of a bundle on a machine used to build the torch network and trace it into ONNX before
its first slice (:func:`covseg.engines.runtime.onnx_runtime.export_onnx`: 4-12 s on a 2-core Zen 3). The graph depends
on the network's code and the input size, not on the weights. So it is exported once by the developers
(``python scripts/make_onnx_templates.py``) and shipped as ``models/model.onnx-template``: a JSON file holding the
ONNX graph whose weight tensors point into an external data file (``weights.bin``, ONNX's external-data format),
and, for each of those tensors, its place in that file and what it is made from.

The tracing exporter folds each BatchNorm into the convolution before it. The template records the convolution
(and BatchNorm, with its eps) behind each such tensor, and :func:`fill_template` folds them with the exporter's
float32 arithmetic and writes ``weights.bin`` and ``model.onnx`` into a folder of the export cache, with neither
torch's exporter nor the ``onnx`` package. Read back, the filled model is the export, byte for byte
(:func:`covseg.engines.runtime.onnx_template_make.make_template` checks it for the weights and for perturbed ones;
``tests/test_onnx_template.py``). A
template is used only while the code it was made from (``covseg/networks`` and the exporter's functions,
:func:`graph_sources_digest`), the bundle's ``network_def`` (for a multi-class chain, also the chain's settings and
its binary bundle's ``network_def``) and the input size are unchanged; otherwise the network is built and
exported as before.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
from pathlib import Path

import torch

from covseg.engines.runtime import onnx_runtime
from covseg.engines.runtime.onnx_recipe import NETWORK_SOURCES, recipe_key, remember_recipe, sources_digest
from covseg.engines.runtime.onnx_runtime import OnnxRuntimeNetwork, cache_dir
from covseg.io.atomic import atomic_path, clean_leftovers
from covseg.networks.loading import bundle_meta, bundle_parser, prior_bundle_of
from covseg.options import as_flag

__all__ = ["TEMPLATE_NAME", "WEIGHTS_FILE", "bundle_state", "fill_template", "filled_bundle_runtime",
           "graph_sources_digest", "read_back", "template_definition", "template_fits", "write_filled"]

log = logging.getLogger(__name__)

TEMPLATE_NAME = "model.onnx-template"
WEIGHTS_FILE = "weights.bin"
FORMAT = 2
ALIGN = 4096  # each tensor starts on a page in weights.bin


_EXPORTER = (onnx_runtime.FinalLogits, onnx_runtime.export_onnx, onnx_runtime._export_traced,
             onnx_runtime.SHAPE_ONLY_TRACER_WARNINGS)
"""The exporter's parts a template's graph depends on (bound at import: a test's stand-in for one changes nothing)."""


def graph_sources_digest() -> str:
    """A digest of the code a template's graph is made from: ``covseg/networks`` and the exporter's own functions
    (not the rest of their modules, so that an unrelated edit there leaves the templates usable)."""
    import inspect

    digest = hashlib.sha256(sources_digest((NETWORK_SOURCES,)).encode())
    for part in _EXPORTER:
        digest.update((part if isinstance(part, str) else inspect.getsource(part)).encode())
    return digest.hexdigest()


def canonical(definition: dict) -> str:
    """``definition`` as the text a template records and compares."""
    return json.dumps(definition, sort_keys=True, default=str)


def template_definition(bundle_dir: str | Path) -> dict:
    """What a bundle's export graph is made from besides covseg's sources: its ``network_def``; for a bundle
    chained after a binary one (a multi-class head), also the chain's settings and the binary bundle's
    ``network_def`` and input size (as :func:`covseg.networks.loading.load_bundle` builds the chain)."""
    bundle_dir = Path(bundle_dir)
    parser = bundle_parser(bundle_dir)
    definition = {"network_def": parser.get("network_def")}
    meta = bundle_meta(parser, bundle_dir)
    prior_dir = prior_bundle_of(bundle_dir, meta)
    if prior_dir is not None:
        prior = bundle_parser(prior_dir)
        definition["chain"] = {"merge_below": float(meta.get("merge_below", 0.0)),
                               "flip_average": as_flag(meta.get("flip_average", False), "flip_average"),
                               "prior_network_def": prior.get("network_def"),
                               "prior_size": int(bundle_meta(prior, prior_dir).get("image_size", 352))}
    return definition


def bundle_state(bundle_dir: str | Path) -> dict[str, torch.Tensor]:
    """The bundle's weights as its (chained) network's state dict, in fp32: ``models/model.pt``; for a chained
    bundle, its binary bundle's weights under ``prior.`` and its own under ``head.`` (``PriorGuidedSegmenter``)."""
    bundle_dir = Path(bundle_dir)

    def weights(folder: Path) -> dict[str, torch.Tensor]:
        return float_state(torch.load(folder / "models" / "model.pt", map_location="cpu", weights_only=True))

    prior_dir = prior_bundle_of(bundle_dir, bundle_meta(bundle_parser(bundle_dir), bundle_dir))
    if prior_dir is None:
        return weights(bundle_dir)
    return {**{f"prior.{k}": v for k, v in weights(prior_dir).items()},
            **{f"head.{k}": v for k, v in weights(bundle_dir).items()}}


def folded_conv(state: dict[str, torch.Tensor], entry: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A convolution's weight and bias with its BatchNorm folded in, as the tracing exporter computes them."""
    def tensor(module: str, name: str) -> torch.Tensor | None:
        return state.get(f"{module}.{name}" if module else name)

    conv, bn = entry["conv"], entry.get("batchnorm")
    weight, bias = state[f"{conv}.weight" if conv else "weight"], tensor(conv, "bias")
    if bn is None:
        return weight, bias
    mean = state[f"{bn}.running_mean"]
    scale = state[f"{bn}.weight"] / torch.sqrt(state[f"{bn}.running_var"] + entry["eps"])
    centred = -mean if bias is None else bias - mean
    return weight * scale.view(-1, 1, 1, 1), centred * scale + state[f"{bn}.bias"]


def read_back(model_path: str | Path) -> bytes:
    """A filled model with its ``weights.bin`` read back into it, serialized as an export's file is (the tensors'
    ``data_location`` cleared, which reading external data sets explicitly to its default)."""
    import onnx

    model = onnx.load(str(model_path))
    for init in model.graph.initializer:
        init.ClearField("data_location")
    return model.SerializeToString()


def _read_template(template: str | Path) -> dict:
    template = json.loads(Path(template).read_text(encoding="utf-8"))
    if not isinstance(template, dict) or template.get("format") != FORMAT:
        raise ValueError(f"not a covseg ONNX template of format {FORMAT}")
    return template


def template_fits(template: Path, image_size: int, definition: dict) -> str | None:
    """Why ``template`` cannot stand for the bundle's export now (``None`` when it can): made from other code,
    another definition (:func:`template_definition`) or another input size."""
    meta = _read_template(template)
    if meta["sources"] != graph_sources_digest():
        return "covseg/networks or the exporter changed since it was made"
    if meta["definition"] != canonical(definition):
        return "the bundle's network_def (or its chain's settings) changed since it was made"
    if meta["image_size"] != int(image_size):
        return f"made for {meta['image_size']}², not {image_size}²"
    return None


def float_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The floating-point tensors of a state dict, in fp32 (weights files are fp16)."""
    return {k: v.float() for k, v in state.items() if v.is_floating_point()}


def write_filled(template: dict, state: dict[str, torch.Tensor], folder: Path) -> Path:
    """Write ``template``'s ``weights.bin`` (``state``'s weights, folded as the exporter folds them) and then
    ``model.onnx`` into ``folder``, each atomically; the model's path. ``KeyError`` / ``ValueError`` when the
    weights do not fit the template."""
    values = {name: state[key] for name, key in template["params"].items()}
    for entry in template["convs"]:
        weight, bias = folded_conv(state, entry)
        for name, value in ((entry["weight"], weight), (entry["bias"], bias)):
            if name is not None:
                values[name] = value
    for tensor in template["tensors"]:
        value = values.get(tensor["name"])
        if value is None or list(value.shape) != tensor["shape"]:
            shape = None if value is None else list(value.shape)
            raise ValueError(f"{tensor['name']}: the weights give {shape}, the graph {tensor['shape']}")
    with atomic_path(folder / WEIGHTS_FILE) as tmp, open(tmp, "wb") as fh:
        for tensor in template["tensors"]:
            fh.seek(tensor["offset"])
            fh.write(values[tensor["name"]].contiguous().numpy().tobytes())
    with atomic_path(folder / "model.onnx") as tmp:
        tmp.write_bytes(base64.b64decode(template["graph"]))
    return folder / "model.onnx"


def fill_template(template: str | Path, weights: str | Path | dict[str, torch.Tensor], folder: str | Path) -> Path:
    """Write the ONNX model of ``template`` with ``weights`` (a state dict, or a file of one, possibly fp16) into
    ``folder`` (``model.onnx`` and its ``weights.bin``); the model's path."""
    if not isinstance(weights, dict):
        weights = torch.load(weights, map_location="cpu", weights_only=True)
    return write_filled(_read_template(template), float_state(weights), Path(folder))


def filled_bundle_runtime(bundle_dir: str | Path, image_size: int, threads: int | None = None,
                          cache: str | Path | None = None) -> OnnxRuntimeNetwork | None:
    """The bundle's export made from its shipped template and weights, opened in ONNX Runtime and remembered under
    the bundle's recipe; ``None`` (logged) where the bundle has no template that fits, or it cannot be written."""
    bundle_dir = Path(bundle_dir)
    template = bundle_dir / "models" / TEMPLATE_NAME
    if not template.is_file():
        return None
    try:
        definition = template_definition(bundle_dir)
        reason = template_fits(template, image_size, definition)
        key = recipe_key(bundle_dir, image_size) if reason is None else None
        if reason is None and key is None:
            reason = "the bundle has no recipe"
        if reason is not None:
            log.info("%s not used: %s", template, reason)
            return None
        folder = Path(cache) if cache is not None else cache_dir()
        for line in clean_leftovers(folder, depth=1):  # a killed fill's half-written weights.bin (125 MB)
            log.info("%s", line)
        path = fill_template(template, bundle_state(bundle_dir), folder / f"{bundle_dir.name}-{key}")
        meta = bundle_meta(bundle_parser(bundle_dir), bundle_dir)
        runtime = OnnxRuntimeNetwork(path, threads=threads, out_channels=int(meta.get("out_channels", 1)))
        runtime.flip_average = bool(definition.get("chain", {}).get("flip_average", False))
    except Exception as exc:  # noqa: BLE001 - a damaged or unfitting template: the network is exported as before
        log.info("%s not used: %s: %s", template, type(exc).__name__, exc)
        return None
    with contextlib.suppress(OSError):
        remember_recipe(bundle_dir, image_size, runtime, cache, key=key)
    return runtime
