"""Per-slice inference time of covseg's SlicePredictor vs the plain loop of the Inf-Net authors' test script.

Usage: ``python benchmarks/bench_infnet_speed.py [--bundle bundles/infnet] [--slices N] [--image-size N] [--compile]
[--repeats N] [--no-docs]``.

Both run the same network on the same slices (the 48 COVID-SemiSeg test slices, or random slices when the data
is absent), one after the other in one process:

* ``plain``: the official procedure: each slice alone (batch 1), fp32, NCHW, resize to 352², forward, upsample
  the logits to the slice size, sigmoid;
* ``covseg``: :class:`covseg.engines.inference.predictor.SlicePredictor` with its defaults (batches of 8, channels-last,
  BatchNorms folded into the convolutions, conv -> ReLU chains run as one oneDNN call, bf16 autocast only where the
  CPU has native bf16 kernels), and at the fastest precision once more without the conv -> ReLU fusion
  (``fuse_relu=False``) and once with neither rewrite (``fold_bn=False``), side by side;
* ``covseg, onnxruntime`` (when onnxruntime is installed): the same predictor on the network exported to ONNX and
  run by ONNX Runtime (``covseg infer --backend onnxruntime``; the export, cached, is not timed);
* with ``--compile``, covseg at the fastest precision under ``torch.compile`` (``covseg infer --compile``; the
  compile, in the warm-up, is not timed);
* with ``--image-size N``, the same two again at N² (``covseg infer --image-size N``): not lossless, so their
  mask Dice vs the plain loop says what the smaller input costs.

With ``--repeats N`` every loop is timed once per round, the loops interleaved, for N rounds; the table gives each
loop's median and the range of its per-round speed-ups, so a slow spell of a shared machine hits all loops alike.

Also reports the agreement of the two masks (probability >= 0.5) as a Dice over all slices, the compute bound
(the network's FLOPs per slice at the sustained GEMM rate of the precision used, ``compute_bound.py``), the issue-15
target (>= 3x the plain loop where the CPU has native bf16, >= 1.7x elsewhere, mask Dice >= 0.995), the ceiling on
that ratio on this machine (the plain loop's time over the GEMM bound per slice of the fastest precision), the
CPU's flags and the load average, and appends a record to ``docs/benchmarks.md``.
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

from covseg.engines.inference.predictor import SlicePredictor
from covseg.engines.runtime.cpu import bf16_fast, onednn_isa_cap
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


class Loop:
    """One timed way of running the network over the slices: ``run()`` returns the probability maps."""

    def __init__(self, label: str, run, bound_s: float, target_row: bool) -> None:
        self.label, self.run, self.bound_s, self.target_row = label, run, bound_s, target_row
        self.seconds: list[float] = []
        self.probs: list[np.ndarray] | None = None

    def time_once(self, n_slices: int) -> None:
        t = time.perf_counter()
        probs = self.run()
        self.seconds.append((time.perf_counter() - t) / n_slices)
        if self.probs is None:
            self.probs = probs


def predictor_loop(label: str, network: torch.nn.Module, slices: list[np.ndarray], size: int, batch_size: int,
                   bf16: bool, bound_s: float, target_row: bool, fold_bn: bool = True,
                   compiled: bool = False, fuse_relu: bool = True) -> Loop:
    """A :class:`SlicePredictor` loop, warmed up on one full batch (the shapes that will run; compiles here)."""
    predictor = SlicePredictor(network, image_size=size, batch_size=batch_size, bf16=bf16, fold_bn=fold_bn,
                              compiled=compiled, fuse_relu=fuse_relu)
    predictor.predict(slices[:batch_size])
    return Loop(label, lambda: predictor.predict(slices), bound_s, target_row)


def timed_rounds(loops: list[Loop], n_slices: int, repeats: int) -> None:
    """Time every loop once per round, the loops interleaved, for ``repeats`` rounds (drift hits all alike)."""
    for _ in range(repeats):
        for loop in loops:
            loop.time_once(n_slices)


def table_rows(loops: list[Loop], repeats: int) -> tuple[list[str], tuple[float, float]]:
    """Markdown rows (median seconds; with repeats, the range of the per-round speed-ups) and the best eligible
    (speed-up, mask Dice) with Dice >= 0.995; ``loops[0]`` is the plain loop."""
    plain = loops[0]
    plain_s = float(np.median(plain.seconds))
    rows, best = [], (0.0, 0.0)
    for loop in loops:
        seconds = float(np.median(loop.seconds))
        dice = 1.0 if loop is plain else mask_dice(plain.probs, loop.probs)
        speedup = plain_s / seconds
        spread = ""
        if repeats > 1:
            per_round = [a / b for a, b in zip(plain.seconds, loop.seconds)]
            spread = f" | {min(per_round):.2f}-{max(per_round):.2f}"
        rows.append(f"| {loop.label} | {seconds:.3f} | {speedup:.2f}{spread} | {dice:.4f} | {loop.bound_s:.3f} | "
                    f"{seconds / loop.bound_s:.2f} |")
        if loop.target_row and dice >= 0.995:
            best = max(best, (speedup, dice))
    return rows, best


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
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds, every loop timed once per round, interleaved; the table gives medians")
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
    fp32_bound = flops / rates["fp32"] / 1e9
    loops = [Loop(f"plain (batch 1, fp32, NCHW, {size}²)", lambda: plain_loop(model.network, slices, size),
                  fp32_bound, False)]
    precisions = [False, True] if native else [False]
    sizes = [size] + ([args.image_size] if args.image_size and args.image_size != size else [])
    bs = args.batch_size
    for side in sizes:
        side_flops = flops if side == size else network_flops(model.network, side)
        for bf16 in precisions:
            name = "bf16" if bf16 else "fp32"
            loops.append(predictor_loop(f"covseg SlicePredictor (batch {bs}, channels-last, {name}, {side}²)",
                                        model.network, slices, side, bs, bf16, side_flops / rates[name] / 1e9,
                                        side == size))
        name = "bf16" if precisions[-1] else "fp32"
        loops.append(predictor_loop(f"covseg SlicePredictor, conv + ReLU not fused (batch {bs}, channels-last, "
                                    f"{name}, {side}²)", model.network, slices, side, bs, precisions[-1],
                                    side_flops / rates[name] / 1e9, False, fuse_relu=False))
        loops.append(predictor_loop(f"covseg SlicePredictor, BatchNorms not folded, nothing fused (batch {bs}, "
                                    f"channels-last, {name}, {side}²)", model.network, slices, side, bs,
                                    precisions[-1], side_flops / rates[name] / 1e9, False, fold_bn=False,
                                    fuse_relu=False))
        if args.compile:
            loops.append(predictor_loop(f"covseg SlicePredictor, torch.compile (batch {bs}, channels-last, {name}, "
                                        f"{side}²)", model.network, slices, side, bs, precisions[-1],
                                        side_flops / rates[name] / 1e9, side == size, compiled=True))
        if has_ort:
            from covseg.engines.runtime.onnx_runtime import onnx_runtime_network

            loops.append(predictor_loop(f"covseg SlicePredictor, onnxruntime backend (batch {bs}, fp32, {side}²)",
                                        onnx_runtime_network(model.network, image_size=side), slices, side, bs,
                                        False, side_flops / rates["fp32"] / 1e9, side == size))
    timed_rounds(loops, len(slices), args.repeats)
    body, best = table_rows(loops, args.repeats)
    spread_head = " | speed-up range over rounds" if args.repeats > 1 else ""
    rows = [f"| loop | s / slice | speed-up vs plain{spread_head} | mask Dice vs plain | GEMM bound s / slice | "
            "× bound |", "|---|---:|---:|" + ("---:|" if args.repeats > 1 else "") + "---:|---:|---:|", *body]
    target = 3.0 if native else 1.7
    verdict = (f"- target (issue 15): >= {target:g}x the plain loop with mask Dice >= 0.995 "
               f"({'native bf16' if native else 'no native bf16'}): best {best[0]:.2f}x at Dice {best[1]:.4f}: "
               f"{'met' if best[0] >= target else 'NOT met'}")
    fastest = "bf16" if native else "fp32"
    ceiling = float(np.median(loops[0].seconds)) / (flops / rates[fastest] / 1e9)
    verdict += (f"; the ceiling here is {ceiling:.2f}x (the plain loop's time over the {fastest} GEMM bound per "
                "slice: a loop running at that bound)")
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
            f"{f' --image-size {args.image_size}' if args.image_size else ''}{' --compile' if args.compile else ''}"
            f"{f' --repeats {args.repeats}' if args.repeats > 1 else ''}`\n"
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
