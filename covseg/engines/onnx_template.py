"""A bundle's ONNX graph shipped without its weights, filled from ``models/model.pt`` on a machine's first run.

The first ONNX Runtime run of a bundle on a machine used to build the torch network and trace it into ONNX before
its first slice (:func:`covseg.engines.onnx_runtime.export_onnx`: 7-10 s on a 2-core Zen 3). The graph depends on
the network's code and the input size, not on the weights. So it is exported once by the developers
(``python scripts/make_onnx_templates.py``) and shipped as ``models/model.onnx-template``: every initializer keeps
its name, type and shape, and its data is left out.

The tracing exporter folds each BatchNorm into the convolution before it. The template records, for each of its
initializers, the convolution (and BatchNorm, with its eps) it is made from; :func:`fill_template` folds them with
the exporter's float32 arithmetic, so the filled model is the export, byte for byte (``tests/test_onnx_template.py``).
:func:`make_template` refuses a network whose export it cannot rebuild that way. A template is used only while the
sources it was made from (``covseg/networks``, the exporter and this module), the bundle's ``network_def`` and the
input size are unchanged; otherwise the network is built and exported as before.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import tempfile
from pathlib import Path

import torch
from torch import nn

from covseg.engines.onnx_recipe import recipe_key, remember_recipe, sources_digest
from covseg.engines.onnx_runtime import OnnxRuntimeNetwork, cache_dir, export_onnx
from covseg.io.atomic import atomic_path

__all__ = ["TEMPLATE_NAME", "fill_template", "filled_bundle_runtime", "make_template", "template_fits"]

log = logging.getLogger(__name__)

TEMPLATE_NAME = "model.onnx-template"
_META_KEY = "covseg.template"
_FORMAT = 1


def _definition(network_def) -> str:
    return json.dumps(network_def, sort_keys=True, default=str)


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
        for conv, batchnorm in remaining:
            if conv == scope or conv.endswith("." + scope):
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


def make_template(network: nn.Module, image_size: int, path: str | Path, network_def) -> Path:
    """Export ``network`` (trained weights) and write its graph without weights to ``path``, with what each
    initializer is made from. ``ValueError`` unless filling it gives the export byte for byte, for these weights
    and for perturbed ones (so no initializer that depends on the weights is left as it was)."""
    network = network.float().eval().cpu()
    model = _export(network, image_size)
    modules = dict(network.named_modules())
    convs = []
    for node, (conv, batchnorm) in _paired(model.graph.node, _conv_calls(network, image_size)):
        convs.append({"conv": conv, "weight": node.input[1], "bias": node.input[2] if len(node.input) > 2 else None,
                      "batchnorm": batchnorm, "eps": float(modules[batchnorm].eps) if batchnorm else None})
    folded = {e["weight"] for e in convs} | {e["bias"] for e in convs if e["bias"] is not None}
    state_names = {f"network.{key}": key for key in network.state_dict()}  # the exporter's FinalLogits wrapper
    params = {init.name: state_names[init.name] for init in model.graph.initializer
              if init.name in state_names and init.name not in folded}
    exports = {id(network): model.SerializeToString()}
    meta = {"format": _FORMAT, "sources": sources_digest(), "network_def": _definition(network_def),
            "image_size": int(image_size), "convs": convs, "params": params}
    for init in model.graph.initializer:
        if init.name in folded or init.name in params:
            init.ClearField("raw_data")
    model.metadata_props.add(key=_META_KEY, value=json.dumps(meta))
    for weights in (network, _perturbed(network)):
        expected = exports.get(id(weights)) or _export(weights, image_size).SerializeToString()
        if _filled(model, _float_state(weights.state_dict())) != expected:
            raise ValueError(f"{type(network).__name__}: its filled template differs from its export")
    with atomic_path(path) as tmp:
        tmp.write_bytes(model.SerializeToString())
    return Path(path)


def _template_meta(model) -> dict:
    for prop in model.metadata_props:
        if prop.key == _META_KEY:
            return json.loads(prop.value)
    raise ValueError("no covseg template metadata")


def template_fits(template: Path, image_size: int, network_def) -> str | None:
    """Why ``template`` cannot stand for the bundle's export now (``None`` when it can): made from other sources,
    another ``network_def`` or another input size."""
    import onnx

    meta = _template_meta(onnx.load(str(template)))
    if meta.get("format") != _FORMAT:
        return f"template format {meta.get('format')}, not {_FORMAT}"
    if meta["sources"] != sources_digest():
        return "covseg/networks, the exporter or the template code changed since it was made"
    if meta["network_def"] != _definition(network_def):
        return "the bundle's network_def changed since it was made"
    if meta["image_size"] != int(image_size):
        return f"made for {meta['image_size']}², not {image_size}²"
    return None


def _float_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in state.items() if v.is_floating_point()}


def _filled(template, state: dict[str, torch.Tensor]) -> bytes:
    """The serialized ONNX model of ``template`` (a loaded ``ModelProto``, left as it is) with ``state``'s weights.
    ``KeyError`` / ``ValueError`` when the weights do not fit it."""
    meta = _template_meta(template)
    values = {name: state[key] for name, key in meta["params"].items()}
    for entry in meta["convs"]:
        weight, bias = _folded(state, entry)
        values[entry["weight"]] = weight
        if entry["bias"] is not None:
            values[entry["bias"]] = bias
    model = type(template)()
    model.CopyFrom(template)
    for init in model.graph.initializer:
        if init.name in values:
            value = values.pop(init.name).contiguous()
            if list(value.shape) != list(init.dims):
                raise ValueError(f"{init.name}: the weights give {list(value.shape)}, the graph {list(init.dims)}")
            init.raw_data = value.numpy().tobytes()
    if values:
        raise ValueError(f"the template has no initializer {next(iter(values))}")
    del model.metadata_props[:]
    return model.SerializeToString()


def fill_template(template: str | Path, weights: str | Path, path: str | Path) -> Path:
    """Write the ONNX model of ``template`` with the (possibly fp16) state dict in ``weights`` to ``path``
    (atomically). ``KeyError`` / ``ValueError`` when the weights do not fit the template."""
    import onnx

    state = _float_state(torch.load(weights, map_location="cpu", weights_only=True))
    data = _filled(onnx.load(str(template)), state)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def filled_bundle_runtime(bundle_dir: str | Path, image_size: int, network_def, threads: int | None = None,
                          cache: str | Path | None = None) -> OnnxRuntimeNetwork | None:
    """The bundle's export made from its shipped template and weights, opened in ONNX Runtime and remembered under
    the bundle's recipe; ``None`` (logged) where the bundle has no template that fits, or it cannot be written."""
    bundle_dir = Path(bundle_dir)
    template = bundle_dir / "models" / TEMPLATE_NAME
    if not template.is_file():
        return None
    try:
        reason = template_fits(template, image_size, network_def)
        key = recipe_key(bundle_dir, image_size) if reason is None else None
        if reason is None and key is None:
            reason = "the bundle has no recipe"
        if reason is not None:
            log.info("%s not used: %s", template, reason)
            return None
        folder = Path(cache) if cache is not None else cache_dir()
        path = fill_template(template, bundle_dir / "models" / "model.pt", folder / f"{bundle_dir.name}-{key}.onnx")
        runtime = OnnxRuntimeNetwork(path, threads=threads)
    except Exception as exc:  # noqa: BLE001 - a damaged or unfitting template: the network is exported as before
        log.info("%s not used: %s: %s", template, type(exc).__name__, exc)
        return None
    with contextlib.suppress(OSError):
        remember_recipe(bundle_dir, image_size, runtime, cache, key=key)
    return runtime
