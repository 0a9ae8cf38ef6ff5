"""Run a covseg network with ONNX Runtime on the CPU: the same logits as torch fp32, in less time.

On the 2-core AVX2 machines of ``docs/benchmarks.md`` ONNX Runtime's fp32 kernels ran Inf-Net at 352² 1.2-1.5x
faster than torch, with logits equal to ~1e-5. The network is exported once (``torch.onnx.export``, dynamic
batch, fixed ``image_size``²) into a cache keyed by its weights, so later runs start at once. The export traces the
network (TorchScript exporter, 2-4 s for Inf-Net) and refuses a trace that depends on the input's values; such a
network goes through the ``torch.export`` exporter (20-40 s) instead.

``backend="auto"`` (:func:`resolve_backend`, the default of ``covseg infer`` and the bundles) runs ONNX Runtime where
it is the faster fp32 engine: trained weights run in fp32 on the CPU (no native bf16), not compiled, with
onnxruntime installed, and a network the fast exporter accepts; torch everywhere else.

    network = onnx_runtime_network(model.network, image_size=352)   # an nn.Module: logits (B, C, H, W)
    network = backend_network(model.network, "auto", 352)             # the same, or the network itself
    SlicePredictor(network, image_size=352)
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from covseg.engines.inference.predictor import logits_of
from covseg.engines.runtime.cpu import resolve_bf16
from covseg.io.atomic import atomic_path, clean_leftovers
from covseg.options import as_flag

__all__ = ["BACKENDS", "OnnxRuntimeNetwork", "TraceRefused", "backend_network", "cache_dir", "export_onnx",
           "onnx_runtime_installed", "onnx_runtime_network", "resolve_backend"]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'covseg[onnx]'"
BACKENDS = ("auto", "torch", "onnxruntime")


class TraceRefused(RuntimeError):
    """The fast (tracing) exporter met a value-dependent step: its graph could be wrong for other inputs."""


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
    """A name that changes with the network's class, its modules' settings (a convolution's padding, a chain's
    ``merge_below`` or ``flip_average``: what changes the graph but not the weights), weights, input size and
    torch version."""
    digest = hashlib.sha256(f"{type(network).__qualname__}|{image_size}|{torch.__version__}".encode())
    digest.update(repr(network).encode())
    for name, module in network.named_modules():
        settings = {k: v for k, v in sorted(vars(module).items())
                    if not k.startswith("_") and k != "training" and isinstance(v, (bool, int, float, str, tuple))}
        digest.update(f"{name}|{settings!r}".encode())
    for name, tensor in network.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    return f"{type(network).__name__.lower()}-{image_size}-{digest.hexdigest()[:16]}"


def export_onnx(network: nn.Module, path: str | Path, image_size: int = 352, fast_only: bool = False) -> Path:
    """Write ``network``'s final logits as an ONNX graph with a dynamic batch axis (atomically: no partial file).

    The TorchScript exporter first (a trace: seconds), with every tracer warning an error, so that a network whose
    steps depend on the input's values is refused (:class:`TraceRefused`) rather than frozen into a wrong graph;
    then, unless ``fast_only``, the ``torch.export`` exporter, which captures such networks or says why not."""
    model = FinalLogits(copy.deepcopy(network)).float().eval().cpu()  # the caller's network stays as it was
    example = torch.rand(2, 1, image_size, image_size)
    with atomic_path(path) as tmp:
        try:
            _export_traced(model, example, tmp)
        except TraceRefused:
            if fast_only:
                raise
            _export_dynamo(model, example).save(str(tmp))
    return Path(path)


SHAPE_ONLY_TRACER_WARNINGS = r"torch\.nn\.modules\.instancenorm|torch\.nn\.functional|monai\.networks\.nets\.basic_unet"
"""Modules whose tracer warnings come from checks of shapes alone, read and found so (torch 2.13, MONAI 1.6):
InstanceNorm's check of the channel count and of more than one spatial element, and BasicUNet's padding of an
upsampled map to the skip connection's size. The export fixes the image size, so these hold for every input."""


def _export_traced(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """The TorchScript (tracing) exporter; :class:`TraceRefused` when the trace could depend on input values (a
    tracer warning, except those of :data:`SHAPE_ONLY_TRACER_WARNINGS`) or the tracing exporter fails otherwise."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notices
        warnings.simplefilter("error", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=SHAPE_ONLY_TRACER_WARNINGS)
        try:
            torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["image"],
                              output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
        except Exception as exc:  # noqa: BLE001 - a tracer warning surfaces as itself or wrapped (SystemError)
            raise TraceRefused(f"{type(model.network).__name__}: the tracing exporter refused it "
                               f"({type(exc).__name__})") from exc


def _export_dynamo(model: nn.Module, example: torch.Tensor):
    """The ``torch.export`` exporter (needs onnxscript): an ONNX program."""
    try:
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"exporting this network needs onnxscript: {INSTALL_HINT}") from exc
    batch = torch.export.Dim("batch", min=1, max=1024)
    exporter_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms" and the like
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=({0: batch},),
                                     input_names=["image"], output_names=["logits"], verbose=False)
    finally:
        exporter_log.setLevel(level)


class OnnxRuntimeNetwork(nn.Module):
    """An ONNX Runtime session behind the ``nn.Module`` interface: (B, 1, H, W) float -> logits (B, C, H, W).

    CPU only; ``threads``: intra-op threads (default: torch's current thread count, so ``--threads`` applies).
    It runs the exported fp32 graph whatever autocast says (``fixed_precision``).
    """

    fixed_precision = "fp32"
    backend = "onnxruntime"

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
                         cache: str | Path | None = None, on_export: Callable[[Path], None] | None = None,
                         fast_only: bool = False) -> OnnxRuntimeNetwork:
    """``network`` as an :class:`OnnxRuntimeNetwork`, exported into the cache on first use (``on_export(path)`` is
    called before that export starts, e.g. to tell the user why the first run waits). ``fast_only``: the tracing
    exporter only (:class:`TraceRefused` where it refuses; the refusal is remembered beside the exports, so the
    network is not traced again)."""
    if not onnx_runtime_installed():
        raise RuntimeError(f"the onnxruntime backend needs onnxruntime and onnx: {INSTALL_HINT}")
    folder = Path(cache) if cache is not None else cache_dir()
    path = folder / f"{network_key(network, image_size)}.onnx"
    refused = path.with_suffix(".refused")
    if fast_only and not path.exists() and refused.exists():
        raise TraceRefused(f"{type(network).__name__}: its trace was refused before ({refused})")
    if not path.exists():
        for line in clean_leftovers(folder, depth=0):  # a killed export's half-written file
            log.info("%s", line)
        log.info("exporting %s to ONNX once: %s", type(network).__name__, path)
        if on_export is not None:
            on_export(path)
        try:
            export_onnx(network, path, image_size, fast_only=fast_only)
        except TraceRefused:
            with contextlib.suppress(OSError):  # a read-only cache: the refusal is simply not remembered
                refused.touch()
            raise
        except Exception as exc:  # the exporter's errors are many and long: one line, and the way out
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise RuntimeError(f"{type(network).__name__} could not be exported to ONNX ({type(exc).__name__}: "
                               f"{first}); use --backend torch") from exc
    out_channels = getattr(network, "out_channels", None)
    runtime = OnnxRuntimeNetwork(path, threads=threads, out_channels=out_channels if isinstance(out_channels, int)
                                 else None)
    runtime.flip_average = bool(getattr(network, "flip_average", False))  # a chain that flip-averages inside its graph
    return runtime


def onnx_runtime_installed() -> bool:
    """Whether onnxruntime, and onnx for the export, can be imported (checked without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def resolve_backend(backend: str = "auto", device: str = "cpu", precision: bool | str = "auto",
                    compiled: bool | str = False, trained: bool = True) -> str:
    """``"torch"`` or ``"onnxruntime"`` for a ``backend`` setting. ``"auto"``: ONNX Runtime when trained weights run
    in fp32 on the CPU (``precision`` read as :func:`covseg.engines.runtime.cpu.resolve_bf16` reads it: bf16 only
    where it is native), not compiled, with onnxruntime installed: there its fp32 kernels beat torch's
    (``docs/benchmarks.md``). torch otherwise, and for untrained networks (tests, demos of random weights)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend != "auto":
        return backend
    fp32_cpu = torch.device(device).type == "cpu" and not resolve_bf16(precision, device)
    fast = fp32_cpu and trained and not as_flag(compiled, "compile") and onnx_runtime_installed()
    return "onnxruntime" if fast else "torch"


def backend_network(network: nn.Module, backend: str = "torch", image_size: int = 352, threads: int | None = None,
                    precision: bool | str = "auto", compiled: bool | str = False, device: str = "cpu",
                    trained: bool = True, on_export: Callable[[Path], None] | None = None,
                    on_torch: Callable[[str], None] | None = None) -> nn.Module:
    """``network`` itself when ``backend`` resolves to torch (:func:`resolve_backend`), its
    :func:`onnx_runtime_network` for ``"onnxruntime"``. Under ``"auto"`` a network that the fast exporter refuses,
    or that cannot be exported, stays on torch (logged, and ``on_torch(reason)`` called). Once exported by an
    explicit ``"onnxruntime"`` run (the slower ``torch.export`` exporter), ``"auto"`` finds the export in the cache
    and runs it."""
    chosen = resolve_backend(backend, device, precision, compiled, trained)
    if chosen == "torch":
        return network
    if backend == "onnxruntime":
        return onnx_runtime_network(network, image_size=image_size, threads=threads, on_export=on_export)
    try:
        return onnx_runtime_network(network, image_size=image_size, threads=threads, on_export=on_export,
                                    fast_only=True)
    except RuntimeError as exc:  # TraceRefused included
        reason = str(exc).splitlines()[0][:200]
        log.info("backend auto: %s stays on torch (%s)", type(network).__name__, reason)
        if on_torch is not None:
            on_torch(reason)
        return network
