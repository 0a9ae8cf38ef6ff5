"""Run a covseg network with ONNX Runtime on the CPU: the same logits as torch fp32, in less time.

On the 2-core AVX2 machines of ``docs/benchmarks.md`` ONNX Runtime's fp32 kernels ran Inf-Net at 352² 1.2-1.5x
faster than torch, with logits equal to ~1e-5. The network is exported once (``torch.onnx.export``, dynamic
batch, fixed ``image_size``²) into a cache keyed by its weights, so later runs start at once.

    network = onnx_runtime_network(model.network, image_size=352)   # an nn.Module: logits (B, C, H, W)
    SlicePredictor(network, image_size=352)
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from covseg.engines.predictor import logits_of
from covseg.io.atomic import atomic_path

__all__ = ["OnnxRuntimeNetwork", "cache_dir", "export_onnx", "onnx_runtime_network", "use_onnx_runtime",
           "backend_network"]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'covseg[onnx]'"


class FinalLogits(nn.Module):
    """``network`` reduced to its final logits tensor (what inference uses; side outputs are not exported)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits_of(self.network(x))


def cache_dir() -> Path:
    """``$COVSEG_CACHE/onnx``, else ``~/.cache/covseg/onnx``."""
    root = os.environ.get("COVSEG_CACHE") or Path.home() / ".cache" / "covseg"
    return Path(root) / "onnx"


def network_key(network: nn.Module, image_size: int) -> str:
    """A name that changes with the network's class, weights, input size and torch version."""
    digest = hashlib.sha256(f"{type(network).__qualname__}|{image_size}|{torch.__version__}".encode())
    for name, tensor in network.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    return f"{type(network).__name__.lower()}-{image_size}-{digest.hexdigest()[:16]}"


def export_onnx(network: nn.Module, path: str | Path, image_size: int = 352) -> Path:
    """Write ``network``'s final logits as an ONNX graph with a dynamic batch axis (atomically: no partial file)."""
    model = FinalLogits(copy.deepcopy(network)).float().eval().cpu()  # the caller's network stays as it was
    example = torch.rand(2, 1, image_size, image_size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    exporter_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms" and the like
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=({0: batch},),
                                        input_names=["image"], output_names=["logits"], verbose=False)
    finally:
        exporter_log.setLevel(level)
    with atomic_path(path) as tmp:
        program.save(str(tmp))
    return Path(path)


class OnnxRuntimeNetwork(nn.Module):
    """An ONNX Runtime session behind the ``nn.Module`` interface: (B, 1, H, W) float -> logits (B, C, H, W).

    CPU only; ``threads``: intra-op threads (default: torch's current thread count, so ``--threads`` applies).
    It runs the exported fp32 graph whatever autocast says (``fixed_precision``).
    """

    fixed_precision = "fp32"

    def __init__(self, onnx_path: str | Path, threads: int | None = None, out_channels: int | None = None) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RuntimeError(f"the onnxruntime backend needs onnxruntime: {INSTALL_HINT}") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.onnx_path = Path(onnx_path)
        try:
            self.session = ort.InferenceSession(str(self.onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own exception types do not derive from RuntimeError
            first = (" ".join(str(exc).split()) or type(exc).__name__)[:200]
            raise RuntimeError(f"{self.onnx_path}: ONNX Runtime cannot load it ({first}); delete the file to export "
                               "the network again") from exc
        self.input_name = self.session.get_inputs()[0].name
        if out_channels is not None:
            self.out_channels = int(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise ValueError(f"the onnxruntime backend runs on the CPU; got a tensor on {x.device}")
        array = np.ascontiguousarray(x.detach().float().numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])


def onnx_runtime_network(network: nn.Module, image_size: int = 352, threads: int | None = None,
                         cache: str | Path | None = None,
                         on_export: Callable[[Path], None] | None = None) -> OnnxRuntimeNetwork:
    """``network`` as an :class:`OnnxRuntimeNetwork`, exported into the cache on first use (``on_export(path)`` is
    called before that export starts, e.g. to tell the user why the first run waits)."""
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"the onnxruntime backend needs onnxruntime and onnxscript: {INSTALL_HINT}") from exc
    folder = Path(cache) if cache is not None else cache_dir()
    path = folder / f"{network_key(network, image_size)}.onnx"
    if not path.exists():
        log.info("exporting %s to ONNX once (about half a minute): %s", type(network).__name__, path)
        if on_export is not None:
            on_export(path)
        try:
            export_onnx(network, path, image_size)
        except Exception as exc:  # the exporter's errors are many and long: one line, and the way out
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise RuntimeError(f"{type(network).__name__} could not be exported to ONNX ({type(exc).__name__}: "
                               f"{first}); use --backend torch") from exc
    out_channels = getattr(network, "out_channels", None)
    return OnnxRuntimeNetwork(path, threads=threads, out_channels=out_channels if isinstance(out_channels, int)
                              else None)


def backend_network(network: nn.Module, backend: str = "torch", image_size: int = 352,
                    threads: int | None = None) -> nn.Module:
    """``network`` itself for ``backend="torch"``, its :func:`onnx_runtime_network` for ``"onnxruntime"``."""
    if backend == "torch":
        return network
    if backend == "onnxruntime":
        return onnx_runtime_network(network, image_size=image_size, threads=threads)
    raise ValueError(f"backend must be 'torch' or 'onnxruntime', not {backend!r}")


def use_onnx_runtime(model: object, threads: int | None = None,
                     on_export: Callable[[Path], None] | None = None) -> object:
    """Swap a loaded model's ``network`` (a :class:`covseg.networks.loading.LoadedModel`) for its ONNX Runtime
    twin at the model's ``image_size``; returns ``model``."""
    model.network = onnx_runtime_network(model.network, image_size=model.image_size, threads=threads,
                                         on_export=on_export)
    return model
