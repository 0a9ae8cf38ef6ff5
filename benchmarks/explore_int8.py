"""int8 post-training quantization of Inf-Net (PyTorch FX or ONNX Runtime): speed and mask agreement with fp32.

Usage: ``python benchmarks/explore_int8.py [--weights W] [--keep-fp32 rfb2 rfb3 …] [--threads 1]``, or
``--engine onnxruntime [--calibration minmax|percentile|entropy] [--reduce-range]`` for ONNX Runtime's static
QDQ quantization of the convolutions (per-channel weights), compared with ONNX Runtime fp32.

Calibrates on the 45 training slices of the trainer's split (and their mirror images), then times fp32 and int8
side by side at 352², batch 1, and scores the agreement of the thresholded masks on the 48 test slices (no
ground truth is used). An exploration: covseg's inference path stays fp32 unless agreement reaches 0.995.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.ao.quantization import get_default_qconfig_mapping, quantize_fx

from covseg.io.slices import semiseg_items, split_train_val
from covseg.metrics.binary import binary_scores
from covseg.networks.loading import load_weights
from covseg.networks.registry import get_network

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "covid-semiseg"
SIZE = 352


def _resized(image: np.ndarray) -> torch.Tensor:
    return F.interpolate(torch.from_numpy(image)[None], size=(SIZE, SIZE), mode="bilinear", align_corners=False)


@torch.inference_mode()
def _masks(model: torch.nn.Module, items: list[dict]) -> list[np.ndarray]:
    return [(model(_resized(it["image"])) >= 0).numpy() for it in items]


def quantize(network: torch.nn.Module, calibration: list[dict], keep_fp32: list[str]) -> torch.nn.Module:
    """FX post-training int8 quantization; the named child modules stay fp32."""
    mapping = get_default_qconfig_mapping("x86")
    for name in keep_fp32:
        mapping = mapping.set_module_name(name, None)
    prepared = quantize_fx.prepare_fx(network, mapping, (torch.rand(1, 1, SIZE, SIZE),))
    with torch.inference_mode():
        for item in calibration:
            image = _resized(item["image"])
            prepared(image)
            prepared(torch.flip(image, (-1,)))
    return quantize_fx.convert_fx(prepared)


class _SliceReader:
    """ONNX Runtime calibration data: each calibration slice and its mirror image, one at a time."""

    def __init__(self, items: list[dict], input_name: str = "image") -> None:
        images = [_resized(it["image"]) for it in items]
        self.batches = iter([{input_name: t.numpy()} for i in images for t in (i, torch.flip(i, (-1,)))])

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def quantize_onnxruntime(network: torch.nn.Module, calibration: list[dict], workdir: Path, method: str,
                         reduce_range: bool, threads: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(ONNX Runtime fp32, ONNX Runtime int8) of ``network``: static QDQ int8 convolutions, per-channel weights."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from covseg.engines.runtime.onnx_runtime import OnnxRuntimeNetwork, export_onnx

    workdir.mkdir(parents=True, exist_ok=True)
    fp32_path, pre_path, int8_path = (workdir / f"infnet-{n}.onnx" for n in ("fp32", "pre", "int8"))
    export_onnx(network, fp32_path, SIZE)
    quant_pre_process(str(fp32_path), str(pre_path), skip_symbolic_shape=True)
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    quantize_static(str(pre_path), str(int8_path), _SliceReader(calibration), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["Conv"], per_channel=True, reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=methods[method])
    return OnnxRuntimeNetwork(fp32_path, threads=threads), OnnxRuntimeNetwork(int8_path, threads=threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(REPO / "bundles" / "infnet" / "models" / "model.pt"))
    parser.add_argument("--keep-fp32", nargs="*", default=[], help="child modules left in fp32, e.g. ra2 edge")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timed-slices", type=int, default=5)
    parser.add_argument("--dataset-dir", default=str(DATA))
    parser.add_argument("--engine", choices=("torch-fx", "onnxruntime"), default="torch-fx")
    parser.add_argument("--calibration", choices=("minmax", "percentile", "entropy"), default="minmax",
                        help="ONNX Runtime calibration method")
    parser.add_argument("--reduce-range", action="store_true",
                        help="7-bit weights (ONNX Runtime advice for AVX2 CPUs without VNNI)")
    parser.add_argument("--workdir", default="/tmp/covseg-int8", help="where the ONNX files go")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.backends.quantized.engine = "x86"
    network = load_weights(get_network("infnet"), args.weights).float().eval()
    train, _ = split_train_val(semiseg_items(args.dataset_dir, "train"))
    test = semiseg_items(args.dataset_dir, "test")
    if args.engine == "onnxruntime":
        network, int8 = quantize_onnxruntime(network, train, Path(args.workdir), args.calibration,
                                             args.reduce_range, args.threads)
        label = f"ONNX Runtime int8 convolutions ({args.calibration}{', reduce_range' if args.reduce_range else ''})"
    else:
        int8 = quantize(network, train, args.keep_fp32)
        label = f"int8 (fp32 kept: {', '.join(args.keep_fp32) or 'none'})"
    timed = test[: args.timed_slices]
    seconds = {"fp32": 0.0, "int8": 0.0}
    for _ in range(2):  # alternate, so that load from other processes hits both alike
        for name, model in (("fp32", network), ("int8", int8)):
            start = time.perf_counter()
            _masks(model, timed)
            seconds[name] += time.perf_counter() - start
    per_slice = {k: v / (2 * len(timed)) for k, v in seconds.items()}
    scores = [binary_scores(q, f) for q, f in zip(_masks(int8, test), _masks(network, test))]
    tp, fp, fn = (sum(sc[k] for sc in scores) for k in ("tp", "fp", "fn"))
    pooled = 2 * tp / (2 * tp + fp + fn)
    per = np.mean([sc["dice"] for sc in scores])
    print(f"{label}, {args.threads} thread(s): "
          f"fp32 {per_slice['fp32']:.3f} s/slice, int8 {per_slice['int8']:.3f} s/slice, "
          f"speed-up {per_slice['fp32'] / per_slice['int8']:.2f}x; mask Dice vs fp32 pooled {pooled:.4f}, "
          f"per-slice mean {per:.4f}")


if __name__ == "__main__":
    main()
