"""Per-slice inference time of covseg's SlicePredictor vs the plain loop of the Inf-Net authors' test script.

Usage: ``python benchmarks/bench_infnet_speed.py [--bundle bundles/infnet] [--slices N] [--no-docs]``.

Both run the same network on the same slices (the 48 COVID-SemiSeg test slices, or random slices when the data
is absent), one after the other in one process:

* ``plain``: the official procedure: each slice alone (batch 1), fp32, NCHW, resize to 352², forward, upsample
  the logits to the slice size, sigmoid;
* ``covseg``: :class:`covseg.engines.predictor.SlicePredictor` with its defaults (batches of 8, channels-last,
  bf16 autocast only where the CPU has native bf16 kernels);
* ``covseg, onnxruntime`` (when onnxruntime is installed): the same predictor on the network exported to ONNX and
  run by ONNX Runtime (``covseg infer --backend onnxruntime``; the export, cached, is not timed).

Also reports the agreement of the two masks (probability >= 0.5) as a Dice over all slices, and appends a
record to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from covseg.engines.cpu import resolve_bf16
from covseg.engines.predictor import SlicePredictor
from covseg.io.slices import list_images, read_grey
from covseg.networks.loading import DEFAULT_BUNDLE, load_model

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "covid-semiseg" / "test" / "images"


def plain_loop(network: torch.nn.Module, slices: list[np.ndarray], size: int) -> list[np.ndarray]:
    """The authors' test loop: one slice at a time, fp32."""
    out = []
    with torch.no_grad():
        for s in slices:
            x = F.interpolate(torch.from_numpy(s)[None, None], size=(size, size), mode="bilinear",
                              align_corners=False)
            logits = network(x)
            logits = F.interpolate(logits, size=s.shape, mode="bilinear", align_corners=False)
            out.append(torch.sigmoid(logits)[0].numpy())
    return out


def mask_dice(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Dice of the two sets of masks (p >= 0.5), pooled over all slices."""
    inter = sum(int(((x >= 0.5) & (y >= 0.5)).sum()) for x, y in zip(a, b))
    total = sum(int((x >= 0.5).sum() + (y >= 0.5).sum()) for x, y in zip(a, b))
    return 1.0 if total == 0 else 2 * inter / total


def _shown(path: str) -> str:
    """A path relative to the repository when it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return path


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    parser.add_argument("--slices", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()

    model = load_model(bundle=args.bundle)
    if DATA.is_dir():
        slices = [read_grey(p) for p in list_images(DATA)][: args.slices]
        source = f"COVID-SemiSeg test slices ({len(slices)}, native sizes)"
    else:
        rng = np.random.default_rng(0)
        slices = [rng.random((400, 360), dtype=np.float32) for _ in range(args.slices)]
        source = f"{len(slices)} random 400x360 slices (data absent)"
    size = model.image_size
    plain_loop(model.network, slices[:2], size)  # warm-up
    t = time.perf_counter()
    plain = plain_loop(model.network, slices, size)
    plain_s = (time.perf_counter() - t) / len(slices)

    predictor = SlicePredictor(model.network, image_size=size, batch_size=args.batch_size)
    predictor.predict(slices[:2])  # warm-up
    t = time.perf_counter()
    fast = predictor.predict(slices)
    fast_s = (time.perf_counter() - t) / len(slices)
    dice = mask_dice(plain, [p for p in fast])

    bf16 = resolve_bf16("auto", "cpu")
    rows = [
        "| loop | s / slice | speed-up | mask Dice vs plain |",
        "|---|---:|---:|---:|",
        f"| plain (batch 1, fp32, NCHW) | {plain_s:.3f} | 1.00 | 1.0000 |",
        f"| covseg SlicePredictor (batch {args.batch_size}, channels-last, bf16={bf16}) | {fast_s:.3f} | "
        f"{plain_s / fast_s:.2f} | {dice:.4f} |",
    ]
    if importlib.util.find_spec("onnxruntime") is not None:
        from covseg.engines.onnx_runtime import onnx_runtime_network

        ort_predictor = SlicePredictor(onnx_runtime_network(model.network, image_size=size), image_size=size,
                                       batch_size=args.batch_size)
        ort_predictor.predict(slices[:2])  # warm-up
        t = time.perf_counter()
        by_ort = ort_predictor.predict(slices)
        ort_s = (time.perf_counter() - t) / len(slices)
        rows.append(f"| covseg SlicePredictor, onnxruntime backend (batch {args.batch_size}, fp32) | {ort_s:.3f} | "
                    f"{plain_s / ort_s:.2f} | {mask_dice(plain, by_ort):.4f} |")
    table = "\n".join(rows)
    print(table)
    if not args.no_docs:
        when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        record = (
            f"\n## Inf-Net per-slice inference: covseg vs the plain loop ({when})\n\n"
            f"- command: `python benchmarks/bench_infnet_speed.py --bundle {_shown(args.bundle)}`\n"
            f"- data: {source}; network: {model.name} ({'trained' if model.trained else 'untrained'}), "
            f"input {size}x{size}\n"
            f"- machine: {torch.get_num_threads()} torch threads, {_cpu_model()}, torch {torch.__version__}\n\n"
            f"{table}\n"
        )
        with open(REPO / "docs" / "benchmarks.md", "a") as fh:
            fh.write(record)


if __name__ == "__main__":
    main()
