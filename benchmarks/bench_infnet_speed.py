"""Per-slice inference time of covseg's SlicePredictor vs the plain loop of the Inf-Net authors' test script.

Usage: ``python benchmarks/bench_infnet_speed.py [--bundle bundles/infnet] [--slices N] [--image-size N] [--compile]
[--no-docs]``.

Both run the same network on the same slices (the 48 COVID-SemiSeg test slices, or random slices when the data
is absent), one after the other in one process:

* ``plain``: the official procedure: each slice alone (batch 1), fp32, NCHW, resize to 352², forward, upsample
  the logits to the slice size, sigmoid;
* ``covseg``: :class:`covseg.engines.predictor.SlicePredictor` with its defaults (batches of 8, channels-last,
  BatchNorms folded into the convolutions, bf16 autocast only where the CPU has native bf16 kernels), and once more
  at the fastest precision with the BatchNorms left as they are (``fold_bn=False``), side by side;
* ``covseg, onnxruntime`` (when onnxruntime is installed): the same predictor on the network exported to ONNX and
  run by ONNX Runtime (``covseg infer --backend onnxruntime``; the export, cached, is not timed);
* with ``--compile``, covseg at the fastest precision under ``torch.compile`` (``covseg infer --compile``; the
  compile, in the warm-up, is not timed);
* with ``--image-size N``, the same two again at N² (``covseg infer --image-size N``): not lossless, so their
  mask Dice vs the plain loop says what the smaller input costs.

Also reports the agreement of the two masks (probability >= 0.5) as a Dice over all slices, the compute bound
(the network's FLOPs per slice at the sustained GEMM rate of the precision used, ``compute_bound.py``), the issue-15
target (>= 3x the plain loop where the CPU has native bf16, >= 1.7x elsewhere, mask Dice >= 0.995), the CPU's flags
and the load average, and appends a record to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from compute_bound import gemm_rate, network_flops
from machine import append_record, describe

from covseg.engines.cpu import bf16_fast, onednn_isa_cap
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


def _timed_row(label: str, network: torch.nn.Module, slices: list[np.ndarray], size: int, batch_size: int,
               plain: list[np.ndarray], plain_s: float, bf16: bool, bound_s: float,
               fold_bn: bool = True, compiled: bool = False) -> tuple[str, float, float]:
    """Time :class:`SlicePredictor` over ``slices`` (after a warm-up); one table row against the plain loop and
    the compute bound; returns the row, the speed-up and the mask Dice."""
    predictor = SlicePredictor(network, image_size=size, batch_size=batch_size, bf16=bf16, fold_bn=fold_bn,
                              compiled=compiled)
    predictor.predict(slices[:batch_size])  # warm-up (one full batch: the shapes that will run)
    t = time.perf_counter()
    probs = predictor.predict(slices)
    seconds = (time.perf_counter() - t) / len(slices)
    dice = mask_dice(plain, probs)
    return (f"| {label} | {seconds:.3f} | {plain_s / seconds:.2f} | {dice:.4f} | {bound_s:.3f} | "
            f"{seconds / bound_s:.2f} |", plain_s / seconds, dice)


def _shown(path: str) -> str:
    """A path relative to the repository when it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    parser.add_argument("--slices", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=None, help="also time covseg at this input size")
    parser.add_argument("--compile", action="store_true", help="also time covseg under torch.compile")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    cap = onednn_isa_cap()
    has_ort = importlib.util.find_spec("onnxruntime") is not None and cap is None  # ORT ignores oneDNN's cap
    isa = (f"- instruction set: oneDNN capped at {cap} ($ONEDNN_MAX_CPU_ISA), ATen at "
           f"{torch.backends.cpu.get_cpu_capability()} ($ATEN_CPU_CAPABILITY): that code path on this CPU; no ONNX "
           "Runtime row (its kernels ignore the cap)\n" if cap else "")

    model = load_model(bundle=args.bundle)
    if DATA.is_dir():
        slices = [read_grey(p) for p in list_images(DATA)][: args.slices]
        source = f"COVID-SemiSeg test slices ({len(slices)}, native sizes)"
    else:
        rng = np.random.default_rng(0)
        slices = [rng.random((400, 360), dtype=np.float32) for _ in range(args.slices)]
        source = f"{len(slices)} random 400x360 slices (data absent)"
    size = model.image_size
    machine_before = describe()
    flops = network_flops(model.network, size)
    native = bf16_fast("cpu")
    rates = {"fp32": gemm_rate(torch.float32)}
    if native:  # an emulated bf16 GEMM takes minutes to time and is never used
        rates["bf16"] = gemm_rate(torch.bfloat16)
    plain_loop(model.network, slices[:2], size)  # warm-up
    t = time.perf_counter()
    plain = plain_loop(model.network, slices, size)
    plain_s = (time.perf_counter() - t) / len(slices)

    precisions = [False, True] if native else [False]
    rows = [
        "| loop | s / slice | speed-up vs plain | mask Dice vs plain | GEMM bound s / slice | × bound |",
        "|---|---:|---:|---:|---:|---:|",
        f"| plain (batch 1, fp32, NCHW, {size}²) | {plain_s:.3f} | 1.00 | 1.0000 | "
        f"{flops / rates['fp32'] / 1e9:.3f} | {plain_s / (flops / rates['fp32'] / 1e9):.2f} |",
    ]
    best = (0.0, 0.0)
    sizes = [size] + ([args.image_size] if args.image_size and args.image_size != size else [])
    for side in sizes:
        side_flops = flops if side == size else network_flops(model.network, side)
        for bf16 in precisions:
            name = "bf16" if bf16 else "fp32"
            label = f"covseg SlicePredictor (batch {args.batch_size}, channels-last, {name}, {side}²)"
            row, speedup, dice = _timed_row(label, model.network, slices, side, args.batch_size, plain, plain_s, bf16,
                                            side_flops / rates[name] / 1e9)
            rows.append(row)
            if side == size and dice >= 0.995:
                best = max(best, (speedup, dice))
        name = "bf16" if precisions[-1] else "fp32"
        row, _, _ = _timed_row(f"covseg SlicePredictor, BatchNorms not folded (batch {args.batch_size}, "
                               f"channels-last, {name}, {side}²)", model.network, slices, side, args.batch_size,
                               plain, plain_s, precisions[-1], side_flops / rates[name] / 1e9, fold_bn=False)
        rows.append(row)
        if args.compile:
            row, speedup, dice = _timed_row(f"covseg SlicePredictor, torch.compile (batch {args.batch_size}, "
                                            f"channels-last, {name}, {side}²)", model.network, slices, side,
                                            args.batch_size, plain, plain_s, precisions[-1],
                                            side_flops / rates[name] / 1e9, compiled=True)
            rows.append(row)
            if side == size and dice >= 0.995:
                best = max(best, (speedup, dice))
        if has_ort:
            from covseg.engines.onnx_runtime import onnx_runtime_network

            row, speedup, dice = _timed_row(
                f"covseg SlicePredictor, onnxruntime backend (batch {args.batch_size}, fp32, {side}²)",
                onnx_runtime_network(model.network, image_size=side), slices, side, args.batch_size, plain, plain_s,
                False, side_flops / rates["fp32"] / 1e9)
            rows.append(row)
            if side == size and dice >= 0.995:
                best = max(best, (speedup, dice))
    target = 3.0 if native else 1.7
    verdict = (f"- target (issue 15): >= {target:g}x the plain loop with mask Dice >= 0.995 "
               f"({'native bf16' if native else 'no native bf16'}): best {best[0]:.2f}x at Dice {best[1]:.4f}: "
               f"{'met' if best[0] >= target else 'NOT met'}")
    bf16_rate = f"{rates['bf16']:.0f} GFLOP/s bf16" if native else "bf16 not native, not timed"
    gemm = (f"- network {flops / 1e9:.1f} GFLOP / slice at {size}²; sustained GEMM {rates['fp32']:.0f} GFLOP/s fp32, "
            f"{bf16_rate} (this run)")
    table = "\n".join(rows)
    print(table)
    print(gemm)
    print(verdict)
    machine_after = describe()
    print(f"{isa}- machine before: {machine_before}\n- machine after: {machine_after}")
    if not args.no_docs:
        record = (
            f"- command: `{f'ONEDNN_MAX_CPU_ISA={cap} ' if cap else ''}"
            f"python benchmarks/bench_infnet_speed.py --bundle {_shown(args.bundle)}"
            f"{f' --slices {args.slices}' if args.slices != 48 else ''}"
            f"{f' --image-size {args.image_size}' if args.image_size else ''}{' --compile' if args.compile else ''}`\n"
            f"- data: {source}; network: {model.name} ({'trained' if model.trained else 'untrained'}), "
            f"input {size}x{size}\n"
            f"- machine: {torch.get_num_threads()} torch threads, torch {torch.__version__}; before the run: "
            f"{machine_before}; after: {machine_after}\n"
            f"{isa}{gemm}\n{verdict}\n\n"
            f"{table}\n"
        )
        append_record("Inf-Net per-slice inference: covseg vs the plain loop", record)

if __name__ == "__main__":
    main()
