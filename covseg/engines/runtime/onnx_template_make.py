"""Make a bundle's ONNX template (:mod:`covseg.engines.runtime.onnx_template`): its export without the weights.

Used by the developers (``python scripts/make_onnx_templates.py``), never by a run. The export is taken with
covseg's own exporter (:func:`covseg.engines.runtime.onnx_runtime.export_onnx`); each Conv node is paired with the
convolution call it came from and the BatchNorm folded into it (forward hooks, checked against the nodes' scope
names); the template is refused unless, filled and read back, it is the export byte for byte, for the network's
weights and for perturbed ones.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import tempfile
from pathlib import Path

import torch
from torch import nn

from covseg.engines.runtime.onnx_runtime import export_onnx
from covseg.engines.runtime.onnx_template import (
    ALIGN,
    FORMAT,
    WEIGHTS_FILE,
    canonical,
    float_state,
    graph_sources_digest,
    read_back,
    write_filled,
)
from covseg.io.atomic import atomic_path

__all__ = ["make_template"]


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
            offset += -(-length // ALIGN) * ALIGN
    template = {"format": FORMAT, "sources": graph_sources_digest(), "definition": canonical(definition),
                "image_size": int(image_size), "convs": convs, "params": params, "tensors": tensors,
                "graph": base64.b64encode(model.SerializeToString()).decode("ascii")}
    for weights in (network, _perturbed(network)):
        expected = exports.get(id(weights)) or _export(weights, image_size).SerializeToString()
        with tempfile.TemporaryDirectory() as folder:
            filled = write_filled(template, float_state(weights.state_dict()), Path(folder))
            if read_back(filled) != expected:
                raise ValueError(f"{type(network).__name__}: its filled template differs from its export")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(template), encoding="utf-8")
    return Path(path)


