"""A bundle's ONNX graph shipped without its weights, filled from ``models/model.pt`` on a machine's first run.

The first ONNX Runtime run of a bundle on a machine used to build the torch network and trace it into ONNX before
its first slice (:func:`covseg.engines.onnx_runtime.export_onnx`: 4-12 s on a 2-core Zen 3). The graph depends on
the network's code and the input size, not on the weights. So it is exported once by the developers
(``python scripts/make_onnx_templates.py``) and shipped as ``models/model.onnx-template``: a JSON file holding the
ONNX graph whose weight tensors point into an external data file (``weights.bin``, ONNX's external-data format),
and, for each of those tensors, its place in that file and what it is made from.

The tracing exporter folds each BatchNorm into the convolution before it. The template records the convolution
(and BatchNorm, with its eps) behind each such tensor, and :func:`fill_template` folds them with the exporter's
float32 arithmetic and writes ``weights.bin`` and ``model.onnx`` into a folder of the export cache, with neither
torch's exporter nor the ``onnx`` package. Read back, the filled model is the export, byte for byte
(:func:`make_template` checks it for the weights and for perturbed ones; ``tests/test_onnx_template.py``). A
template is used only while the code it was made from (``covseg/networks`` and the exporter's functions,
:func:`graph_sources_digest`), the bundle's ``network_def`` (for a multi-class chain, also the chain's settings and
its binary bundle's ``network_def``) and the input size are unchanged; otherwise the network is built and
exported as before.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
import logging
import re
import tempfile
from pathlib import Path

import torch
from torch import nn

from covseg.engines import onnx_runtime
from covseg.engines.onnx_recipe import NETWORK_SOURCES, recipe_key, remember_recipe, sources_digest
from covseg.engines.onnx_runtime import OnnxRuntimeNetwork, cache_dir, export_onnx
from covseg.io.atomic import atomic_path, clean_leftovers
from covseg.networks.loading import bundle_meta, bundle_parser, prior_bundle_of

__all__ = ["TEMPLATE_NAME", "bundle_state", "fill_template", "filled_bundle_runtime", "make_template", "read_back",
           "template_definition", "template_fits"]

log = logging.getLogger(__name__)

TEMPLATE_NAME = "model.onnx-template"
WEIGHTS_FILE = "weights.bin"
_FORMAT = 2
_ALIGN = 4096  # each tensor starts on a page in weights.bin


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


def _canonical(definition: dict) -> str:
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
                               "flip_average": bool(meta.get("flip_average", False)),
                               "prior_network_def": prior.get("network_def"),
                               "prior_size": int(bundle_meta(prior, prior_dir).get("image_size", 352))}
    return definition


def bundle_state(bundle_dir: str | Path) -> dict[str, torch.Tensor]:
    """The bundle's weights as its (chained) network's state dict, in fp32: ``models/model.pt``; for a chained
    bundle, its binary bundle's weights under ``prior.`` and its own under ``head.`` (``PriorGuidedSegmenter``)."""
    bundle_dir = Path(bundle_dir)

    def weights(folder: Path) -> dict[str, torch.Tensor]:
        return _float_state(torch.load(folder / "models" / "model.pt", map_location="cpu", weights_only=True))

    prior_dir = prior_bundle_of(bundle_dir, bundle_meta(bundle_parser(bundle_dir), bundle_dir))
    if prior_dir is None:
        return weights(bundle_dir)
    return {**{f"prior.{k}": v for k, v in weights(prior_dir).items()},
            **{f"head.{k}": v for k, v in weights(bundle_dir).items()}}


def _conv_calls(network: nn.Module, image_size: int) -> list[tuple[str, str | None]]:
    """Each convolution call of one forward pass, in order: (its module name, the BatchNorm that takes its output
    straight after, if any). The traced graph lists its Conv nodes in this order."""
    names = {module: name for name, module in network.named_modules()}
    calls: list[list] = []

    def after_conv(module, inputs, output):
        calls.append([names[module], None, output])

    def after_batchnorm(module, inputs, output):
        for call in reversed(calls):
            if call[2] is inputs[0]:
                call[1] = names[module]
                return

    hooks = [m.register_forward_hook(after_conv if isinstance(m, nn.Conv2d) else after_batchnorm)
             for m in network.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    try:
        with torch.no_grad():
            network(torch.rand(1, 1, image_size, image_size))
    finally:
        for hook in hooks:
            hook.remove()
    return [(conv, batchnorm) for conv, batchnorm, _ in calls]


def _folded(state: dict[str, torch.Tensor], entry: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
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


def _paired(nodes, calls: list[tuple[str, str | None]]):
    """Each Conv node of the export with the convolution call it came from: the calls in order, skipping those
    whose output the export left out (side outputs), matched by the module scope in the node's name."""
    remaining = iter(calls)
    for node in (n for n in nodes if n.op_type == "Conv"):
        scopes = node.name.strip("/").split("/")[:-1]  # "/network/stem/stem.0/Conv": the wrapper, then the modules
        scope = scopes[-1] if len(scopes) > 1 else ""  # "": the network itself is the convolution
        names = {scope, re.sub(r"_\d+$", "", scope)}  # a module's second call is scoped "<name>_1"
        for conv, batchnorm in remaining:
            if any(conv == name or conv.endswith("." + name) for name in names):
                yield node, (conv, batchnorm)
                break
        else:
            raise ValueError(f"Conv node {node.name} matches no convolution call of the network")


def _export(network: nn.Module, image_size: int):
    import onnx

    with tempfile.TemporaryDirectory() as folder:
        return onnx.load(str(export_onnx(network, Path(folder) / "export.onnx", image_size, fast_only=True)))


def _perturbed(network: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``network`` with every float tensor of its state dict (what a weights file holds) scaled by its own
    factor in [0.5, 1.5]."""
    other = copy.deepcopy(network)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in other.state_dict(keep_vars=True).values():
            if tensor.is_floating_point():
                tensor.mul_(torch.rand(tensor.shape, generator=generator) + 0.5)
    return other


def make_template(network: nn.Module, image_size: int, path: str | Path, definition: dict) -> Path:
    """Export ``network`` (trained weights) and write its template to ``path``: the graph, where each weight tensor
    lies in ``weights.bin`` and what it is made from, and ``definition`` (:func:`template_definition`).
    ``ValueError`` unless the filled model, read back, is the export byte for byte, for these weights and for
    perturbed ones (so that no tensor that depends on the weights is left out)."""
    import onnx

    network = network.float().eval().cpu()
    model = _export(network, image_size)
    modules = dict(network.named_modules())
    initializers = {init.name for init in model.graph.initializer}
    convs = []
    for node, (conv, batchnorm) in _paired(model.graph.node, _conv_calls(network, image_size)):
        # a call whose weights equal an earlier call's (a module run again) reads them through an Identity node
        weight, bias = (name if name in initializers else None for name in [*node.input[1:3], ""][:2])
        if weight or bias:
            convs.append({"conv": conv, "weight": weight, "bias": bias, "batchnorm": batchnorm,
                          "eps": float(modules[batchnorm].eps) if batchnorm else None})
    folded = {e[k] for e in convs for k in ("weight", "bias")} - {None}
    state_names = {f"network.{key}": key for key in network.state_dict()}  # the exporter's FinalLogits wrapper
    params = {init.name: state_names[init.name] for init in model.graph.initializer
              if init.name in state_names and init.name not in folded}
    exports = {id(network): model.SerializeToString()}
    tensors, offset = [], 0
    for init in model.graph.initializer:
        if init.name in folded or init.name in params:
            if init.data_type != onnx.TensorProto.FLOAT:
                raise ValueError(f"initializer {init.name} is not float32")
            length = len(init.raw_data)
            init.ClearField("raw_data")
            init.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", WEIGHTS_FILE), ("offset", offset), ("length", length)):
                init.external_data.add(key=key, value=str(value))
            tensors.append({"name": init.name, "offset": offset, "shape": list(init.dims)})
            offset += -(-length // _ALIGN) * _ALIGN
    template = {"format": _FORMAT, "sources": graph_sources_digest(), "definition": _canonical(definition),
                "image_size": int(image_size), "convs": convs, "params": params, "tensors": tensors,
                "graph": base64.b64encode(model.SerializeToString()).decode("ascii")}
    for weights in (network, _perturbed(network)):
        expected = exports.get(id(weights)) or _export(weights, image_size).SerializeToString()
        with tempfile.TemporaryDirectory() as folder:
            filled = _write_filled(template, _float_state(weights.state_dict()), Path(folder))
            if read_back(filled) != expected:
                raise ValueError(f"{type(network).__name__}: its filled template differs from its export")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(template), encoding="utf-8")
    return Path(path)


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
    if not isinstance(template, dict) or template.get("format") != _FORMAT:
        raise ValueError(f"not a covseg ONNX template of format {_FORMAT}")
    return template


def template_fits(template: Path, image_size: int, definition: dict) -> str | None:
    """Why ``template`` cannot stand for the bundle's export now (``None`` when it can): made from other code,
    another definition (:func:`template_definition`) or another input size."""
    meta = _read_template(template)
    if meta["sources"] != graph_sources_digest():
        return "covseg/networks or the exporter changed since it was made"
    if meta["definition"] != _canonical(definition):
        return "the bundle's network_def (or its chain's settings) changed since it was made"
    if meta["image_size"] != int(image_size):
        return f"made for {meta['image_size']}², not {image_size}²"
    return None


def _float_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in state.items() if v.is_floating_point()}


def _write_filled(template: dict, state: dict[str, torch.Tensor], folder: Path) -> Path:
    """Write ``template``'s ``weights.bin`` (``state``'s weights, folded as the exporter folds them) and then
    ``model.onnx`` into ``folder``, each atomically; the model's path. ``KeyError`` / ``ValueError`` when the
    weights do not fit the template."""
    values = {name: state[key] for name, key in template["params"].items()}
    for entry in template["convs"]:
        weight, bias = _folded(state, entry)
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
    return _write_filled(_read_template(template), _float_state(weights), Path(folder))


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
