"""Inference-only graph rewrite: a Conv2d followed by a ReLU, or by ``+ residual`` and a ReLU, as one oneDNN call.

Eager PyTorch runs ``relu(conv(x) + residual)`` as three passes over the feature map: the convolution writes it,
the add reads and writes it, the ReLU reads and writes it again. oneDNN can apply the add and the ReLU as
post-operations of the convolution while the output is still in registers (``torch.ops.mkldnn
._convolution_pointwise``, the kernel ``torch.compile``'s CPU backend emits for the same pattern). After
BatchNorm folding (:mod:`covseg.engines.runtime.fusion`) Inf-Net has 88 conv -> ReLU and 19 conv -> add -> ReLU chains
that qualify. The rewrite works on the ``torch.fx`` graph the folding produced; in fp32 the result is the same
(checked on a probe input before use), in bf16 the add happens before the rounding to bf16 instead of after.
CPU only; anything else (no graph, no oneDNN, weights off the CPU, a failing probe) leaves the module as it is.
"""

from __future__ import annotations

import copy
import functools
import logging
import operator

import torch
import torch.nn.functional as F
from torch import nn

from covseg.engines.runtime.fusion import agrees_on_probe

__all__ = ["FusedConvReLU", "fuse_conv_relu"]

log = logging.getLogger(__name__)

_RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_)
_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)


@functools.cache
def _onednn_runs(dtype: torch.dtype) -> bool:
    """Whether oneDNN has convolutions for ``dtype`` on this CPU (bf16 needs AVX-512 BF16 or AVX-NE-CONVERT)."""
    if dtype == torch.float32:
        return True
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if dtype == torch.float16:
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return False


class FusedConvReLU(nn.Module):
    """``relu(conv(x))``, or ``relu(conv(x) + residual)`` when called with a residual, in one oneDNN call.

    Runs in the autocast dtype when CPU autocast is on (as ``nn.Conv2d`` would), else in the input's dtype; where
    oneDNN has no kernels for that dtype (bf16 on an AVX2-only CPU), or for a bf16 residual add on an input that
    is not channels-last, it runs the three steps as before.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self._cast: tuple[tuple, torch.Tensor, torch.Tensor | None] | None = None

    def _weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weights in ``dtype``, cast once and again only after they change (in-place updates bump the
        tensors' version counters: a traced result shares its weights with the module it was made from)."""
        if dtype == self.weight.dtype:
            return self.weight, self.bias
        key = (dtype, self.weight._version, None if self.bias is None else self.bias._version)
        if self._cast is None or self._cast[0] != key:
            bias = None if self.bias is None else self.bias.detach().to(dtype)
            self._cast = (key, self.weight.detach().to(dtype), bias)
        return self._cast[1], self._cast[2]

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        # oneDNN's fused add in bf16 needs channels-last input (PyTorch's NCHW fallback has no bf16 add_relu)
        nchw_add = residual is not None and dtype != torch.float32 and not x.is_contiguous(
            memory_format=torch.channels_last)
        if nchw_add or not _onednn_runs(dtype):
            out = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
            return F.relu(out if residual is None else out + residual)
        weight, bias = self._weights(dtype)
        x = x.to(dtype)
        if residual is None:
            return torch.ops.mkldnn._convolution_pointwise(
                x, weight, bias, self.padding, self.stride, self.dilation, self.groups, "relu", [], "")
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, residual.to(dtype), weight, bias, self.padding, self.stride, self.dilation, self.groups,
            "add", 1.0, "relu", [], "")


def _is_relu(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return type(modules.get(node.target)) is nn.ReLU
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _is_plain_add(node: torch.fx.Node) -> bool:
    return node.op == "call_function" and node.target in _ADD_FUNCTIONS and len(node.args) == 2 and not node.kwargs


def _only_user(node: torch.fx.Node) -> torch.fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _fusable(conv: nn.Module | None) -> bool:
    return (type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
            and conv.weight.device.type == "cpu")


def _rewrite(graph_module: torch.fx.GraphModule) -> int:
    """Fuse the chains in place; returns how many were fused."""
    modules = dict(graph_module.named_modules())
    graph = graph_module.graph
    fused = 0
    for node in list(graph.nodes):
        if node.op != "call_module" or not _fusable(modules.get(node.target)):
            continue
        user = _only_user(node)
        if user is None:
            continue
        if _is_relu(user, modules):
            last, args, dead = user, (node.args[0],), [user, node]
        elif _is_plain_add(user) and (relu := _only_user(user)) is not None and _is_relu(relu, modules):
            residual = user.args[1] if user.args[0] is node else user.args[0]
            if residual is node:
                continue
            last, args, dead = relu, (node.args[0], residual), [relu, user, node]
        else:
            continue
        name = f"{node.target.replace('.', '_')}_relu"
        graph_module.add_submodule(name, FusedConvReLU(modules[node.target]))
        with graph.inserting_after(last):
            replacement = graph.call_module(name, args)
        last.replace_all_uses_with(replacement)
        for dead_node in dead:
            graph.erase_node(dead_node)
        fused += 1
    if fused:
        graph.lint()
        graph_module.delete_all_unused_submodules()
        graph_module.recompile()
    return fused


def _fx_fused(module: nn.Module) -> nn.Module | None:
    """The torch.fx rewrite of a new graph over ``module``'s submodules (``module`` keeps its own graph; weights are
    shared, not copied), or None when the module cannot be traced or has nothing to fuse."""
    try:
        graph_module = (torch.fx.GraphModule(module, copy.deepcopy(module.graph))
                        if isinstance(module, torch.fx.GraphModule) else torch.fx.symbolic_trace(module))
        return graph_module if _rewrite(graph_module) else None
    except Exception as exc:  # noqa: BLE001 - control flow torch.fx cannot follow: try the Sequential pairs
        log.debug("torch.fx cannot fuse %s: %s", type(module).__name__, exc)
        return None


def _sequential_fused(module: nn.Module) -> nn.Module | None:
    """A copy with the plain-Sequential pairs fused, or None when there are none (or no copy can be made)."""
    try:
        fused = copy.deepcopy(module)
    except Exception as exc:  # noqa: BLE001 - e.g. a module holding a native session: left as it is
        log.debug("cannot copy %s: %s", type(module).__name__, exc)
        return None
    return fused if _fuse_sequentials(fused) else None


def _fuse_sequentials(module: nn.Module) -> int:
    """Fuse, in place, each Conv2d followed by a ReLU inside a plain ``nn.Sequential`` (whose order is its data
    flow; Identities, such as folded BatchNorms leave, in between)."""
    fused = 0
    for parent in module.modules():
        if type(parent).forward is not nn.Sequential.forward:
            continue
        names = [name for name, child in parent._modules.items() if type(child) is not nn.Identity]
        for first, second in zip(names, names[1:]):
            conv, relu = parent._modules[first], parent._modules[second]
            if _fusable(conv) and type(relu) is nn.ReLU:
                parent._modules[first] = FusedConvReLU(conv)
                parent._modules[second] = nn.Identity()
                fused += 1
    return fused


def fuse_conv_relu(module: nn.Module, probe_size: int = 64) -> nn.Module:
    """A module computing what ``module`` does (in eval mode; a ``torch.fx.GraphModule`` such as
    :func:`covseg.engines.runtime.fusion.fold_batchnorm` returns, or any network torch.fx can trace) with its
    conv -> ReLU and conv -> add -> ReLU chains fused (else a copy with the conv -> ReLU pairs of its plain
    Sequentials fused), or ``module`` itself when there is no such chain or the result disagrees with it on a probe
    input. ``module`` is left as it is, but a traced result shares its weight tensors (building it copies no weights;
    changing one's weights or their memory format changes the other's)."""
    if (module.training or not torch.backends.mkldnn.is_available()
            or not any(_fusable(m) for m in module.modules())):  # e.g. an ONNX Runtime session: nothing to do
        return module
    for rewrite in (_fx_fused, _sequential_fused):
        fused = rewrite(module)
        if fused is not None and agrees_on_probe(module, fused, probe_size):
            return fused.eval()
    return module
