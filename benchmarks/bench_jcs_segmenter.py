"""JCS segmenter: cost per slice (GMACs at 256², 352², 512²) and CPU inference time at 512², fp32 and bf16 side by side.

Usage: ``python benchmarks/bench_jcs_segmenter.py [--bundle bundles/jcs_segmenter] [--size 512] [--slices 8]
[--threads N] [--no-docs]``.

One process, one network (the bundle's weights when present, else a fresh one: speed does not depend on them),
the same slices (COVID-SemiSeg test slices, or random ones when the data is absent), batch 1, channels-last,
eval mode under ``torch.inference_mode``: first fp32, then bf16 autocast (only when the CPU has native bf16
kernels, :func:`covseg.engines.runtime.cpu.bf16_fast`; emulated bf16 is many times slower and is not timed). Reports
seconds per slice, the ratio, the Dice of the two masks (p >= 0.5) and the load average before and after, and
appends the record to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from machine import append_record, cpu_model

from covseg.engines.runtime.cpu import autocast_context, bf16_fast
from covseg.io.slices import list_images, read_grey
from covseg.networks.jcs import JCSSegmenter
from covseg.networks.loading import load_weights

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "covid-semiseg" / "test" / "images"


def conv_gmacs(network: torch.nn.Module, size: int) -> float:
    """Multiply-accumulates of every convolution and linear layer for one size² slice, in billions."""
    total = [0]

    def hook(module: torch.nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total[0] += output.numel() * module.in_channels // module.groups * k
        else:
            total[0] += output.numel() * module.in_features

    layers = [m for m in network.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    hooks = [m.register_forward_hook(hook) for m in layers]
    with torch.inference_mode():
        network.eval()(torch.zeros(1, 1, size, size))
    for h in hooks:
        h.remove()
    return total[0] / 1e9


def time_slices(network: torch.nn.Module, slices: list[np.ndarray], size: int, bf16: bool) -> tuple[float, list]:
    """Seconds per slice (batch 1, after one warm-up slice) and the probability maps at network size."""
    inputs = [F.interpolate(torch.from_numpy(s)[None, None], size=(size, size), mode="bilinear", align_corners=False)
              .contiguous(memory_format=torch.channels_last) for s in slices]
    probs = []
    with torch.inference_mode():
        with autocast_context("cpu", bf16):
            network(inputs[0])  # warm-up (oneDNN primitive creation)
        start = time.perf_counter()
        for x in inputs:
            with autocast_context("cpu", bf16):
                logits = network(x)
            probs.append(torch.sigmoid(logits.float())[0, 0].numpy())
        seconds = (time.perf_counter() - start) / len(inputs)
    return seconds, probs


def mask_dice(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    inter = sum(int(((x >= 0.5) & (y >= 0.5)).sum()) for x, y in zip(a, b))
    total = sum(int((x >= 0.5).sum() + (y >= 0.5).sum()) for x, y in zip(a, b))
    return 1.0 if total == 0 else 2 * inter / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(REPO / "bundles" / "jcs_segmenter"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    network = JCSSegmenter()
    weights = Path(args.bundle) / "models" / "model.pt"
    trained = weights.exists()
    if trained:
        load_weights(network, weights)
    network = network.eval().to(memory_format=torch.channels_last)
    if DATA.is_dir():
        slices = [read_grey(p) for p in list_images(DATA)][: args.slices]
        source = f"{len(slices)} COVID-SemiSeg test slices"
    else:
        rng = np.random.default_rng(0)
        slices = [rng.random((512, 512), dtype=np.float32) for _ in range(args.slices)]
        source = f"{len(slices)} random slices (data absent)"

    params = sum(p.numel() for p in network.parameters()) / 1e6
    gmacs = {s: conv_gmacs(network, s) for s in (256, 352, 512)}
    load_before = os.getloadavg()
    fp32_s, fp32_probs = time_slices(network, slices, args.size, bf16=False)
    rows = ["| precision | s / slice | speed-up | mask Dice vs fp32 |", "|---|---:|---:|---:|",
            f"| fp32 | {fp32_s:.3f} | 1.00 | 1.0000 |"]
    if bf16_fast("cpu"):
        bf16_s, bf16_probs = time_slices(network, slices, args.size, bf16=True)
        agreement = mask_dice(fp32_probs, bf16_probs)
        rows.append(f"| bf16 autocast | {bf16_s:.3f} | {fp32_s / bf16_s:.2f} | {agreement:.4f} |")
    else:
        rows.append("| bf16 autocast | not timed: no native bf16 kernels on this CPU | | |")
    load_after = os.getloadavg()
    table = "\n".join(rows)
    cost = ", ".join(f"{s}²: {g:.1f}" for s, g in gmacs.items())
    summary = (f"JCS segmenter, {params:.2f} M parameters; GMACs per slice {cost}\n"
               f"load average (1, 5, 15 min) before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
               f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print(summary)
    print(table)
    if not args.no_docs:
        record = (
            f"- command: `python benchmarks/bench_jcs_segmenter.py"
            f"{f' --threads {args.threads}' if args.threads else ''}`\n"
            f"- data: {source}, each resized to {args.size}², batch 1, channels-last; network "
            f"{'with the bundle weights' if trained else 'untrained'}\n"
            f"- cost: {params:.2f} M parameters; GMACs per slice {cost}\n"
            f"- machine: {torch.get_num_threads()} torch threads, {cpu_model()}, torch {torch.__version__}; "
            f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (other jobs shared the CPU)\n\n"
            f"{table}"
        )
        append_record(f"JCS segmenter inference at {args.size}² on CPU, fp32 vs bf16", record)


if __name__ == "__main__":
    main()
