"""int8 post-training quantization of Inf-Net (PyTorch FX, x86 engine): speed and mask agreement with fp32.

Usage: ``python benchmarks/explore_int8.py [--weights W] [--keep-fp32 rfb2 rfb3 …] [--threads 1]``.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(REPO / "bundles" / "infnet" / "models" / "model.pt"))
    parser.add_argument("--keep-fp32", nargs="*", default=[], help="child modules left in fp32, e.g. ra2 edge")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timed-slices", type=int, default=5)
    parser.add_argument("--dataset-dir", default=str(DATA))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.backends.quantized.engine = "x86"
    network = load_weights(get_network("infnet"), args.weights).float().eval()
    train, _ = split_train_val(semiseg_items(args.dataset_dir, "train"))
    test = semiseg_items(args.dataset_dir, "test")
    int8 = quantize(network, train, args.keep_fp32)
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
    print(f"int8 (fp32 kept: {', '.join(args.keep_fp32) or 'none'}), {args.threads} thread(s): "
          f"fp32 {per_slice['fp32']:.3f} s/slice, int8 {per_slice['int8']:.3f} s/slice, "
          f"speed-up {per_slice['fp32'] / per_slice['int8']:.2f}x; mask Dice vs fp32 pooled {pooled:.4f}, "
          f"per-slice mean {per:.4f}")


if __name__ == "__main__":
    main()
