"""How fast can Inf-Net run on this CPU at best? A compute lower bound for the speed targets.

Usage: ``python benchmarks/compute_bound.py [--bundle bundles/infnet] [--slices 255] [--sizes 352 288] [--no-docs]``.

Measures, in one process on an otherwise idle machine:

* the network's floating-point work per slice at each input size (``torch.utils.flop_counter``: convolutions
  and matrix products, 2 FLOPs per multiply-add);
* the machine's sustained dense fp32 throughput: the best of several large matrix products, run both by
  ``torch.mm`` (MKL in fp32) and as a 1x1 convolution (oneDNN, the engine of the network's convolutions), the
  faster engine counting, and the same in bf16 (native only where the CPU has bf16 kernels). On AMD CPUs with
  AVX-512, MKL's fp32 product runs AVX2 code at about half of oneDNN's rate;
* the throughput the network itself reaches (batch 8, fp32, channels-last, no grad);
* the network's convolution FLOPs by kind (1x1, 3x3 stride 1, other) and what a Winograd algorithm, which cuts
  the multiplies of 3x3 stride-1 layers only, could give the whole network at most.

From these it prints the lowest possible network time for ``--slices`` slices (the lung slices of the
512x512x300 phantom of ``bench_infer.py``), were every FLOP run at the GEMM rate, and appends a record to
``docs/benchmarks.md``. No inference path that keeps the fp32 result can beat that bound on this machine.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from machine import append_record, describe
from torch.utils.flop_counter import FlopCounterMode

from covseg.networks.loading import DEFAULT_BUNDLE, load_model


def network_flops(network: torch.nn.Module, size: int) -> float:
    """FLOPs of one forward pass on a 1x1xsize x size slice."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(torch.zeros(1, 1, size, size))
    return float(counter.get_total_flops())


def conv_flop_shares(network: torch.nn.Module, size: int) -> dict[str, float]:
    """FLOPs of one forward pass split by convolution kind: ``1x1``, ``3x3 stride 1`` (undilated, the layers a
    Winograd algorithm could take) and ``other`` (strided, dilated, larger or separable kernels)."""
    shares = {"1x1": 0.0, "3x3 stride 1": 0.0, "other": 0.0}

    def count(module: torch.nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        k, stride, dilation = module.kernel_size, module.stride, module.dilation
        flops = 2.0 * output.shape[-2] * output.shape[-1] * module.out_channels * \
            module.in_channels // module.groups * k[0] * k[1]
        if k == (1, 1):
            shares["1x1"] += flops
        elif k == (3, 3) and stride == (1, 1) and dilation == (1, 1):
            shares["3x3 stride 1"] += flops
        else:
            shares["other"] += flops

    hooks = [m.register_forward_hook(count) for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            network(torch.zeros(1, 1, size, size))
    finally:
        for h in hooks:
            h.remove()
    return shares


def winograd_ceiling(share_3x3: float, fewer: float) -> float:
    """Whole-network speed-up if the ``share_3x3`` of the FLOPs needed ``fewer`` times fewer multiplies and every
    FLOP ran at one rate (transforms free): an upper bound on what a Winograd convolution can give."""
    return 1.0 / (1.0 - share_3x3 * (1.0 - 1.0 / fewer))


def gemm_rates(dtype: torch.dtype, n: int = 3072, repeats: int = 10) -> dict[str, float]:
    """Best sustained GFLOP/s of one n x n x n matrix product in ``dtype``, per engine: ``torch.mm`` (MKL's sgemm in
    fp32, oneDNN in bf16) and the same product as a 1x1 convolution over n positions (oneDNN, the engine the
    network's convolutions run on). They can differ by 2x: MKL runs its AVX2 kernels on AMD CPUs with AVX-512."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    rows = next(r for r in range(int(n**0.5), 0, -1) if n % r == 0)
    x = a.t().reshape(1, n, rows, n // rows).contiguous(memory_format=torch.channels_last)
    w = b.t().reshape(n, n, 1, 1).contiguous(memory_format=torch.channels_last)
    engines = {"torch.mm": lambda: torch.mm(a, b), "oneDNN 1x1 conv": lambda: torch.nn.functional.conv2d(x, w)}
    rates = {}
    with torch.inference_mode():
        for name, product in engines.items():
            product()  # warm-up
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                product()
                best = min(best, time.perf_counter() - t)
            rates[name] = 2 * n**3 / best / 1e9
    return rates


def gemm_rate(dtype: torch.dtype, n: int = 3072, repeats: int = 10) -> float:
    """The machine's sustained matrix-product GFLOP/s in ``dtype``: the faster engine of :func:`gemm_rates`."""
    return max(gemm_rates(dtype, n, repeats).values())


def network_rate(network: torch.nn.Module, size: int, flops: float, batch: int, channels_last: bool,
                 repeats: int = 3) -> float:
    """Best GFLOP/s the network reaches over one batch (fp32, no grad)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = network.to(memory_format=fmt)
    x = torch.randn(batch, 1, size, size).contiguous(memory_format=fmt)
    best = float("inf")
    with torch.no_grad():
        net(x)  # warm-up
        for _ in range(repeats):
            t = time.perf_counter()
            net(x)
            best = min(best, time.perf_counter() - t)
    return flops * batch / best / 1e9


def fma_peak(cores: int, mhz: float, flops_per_cycle: int = 32) -> float:
    """Theoretical fp32 GFLOP/s: two 256-bit FMA units per core (AVX2) give 32 FLOPs per cycle, two 512-bit ones
    (AVX-512 server cores) 64."""
    return cores * flops_per_cycle * mhz / 1e3


def _cpuinfo() -> tuple[str, float]:
    """The CPU model with its flags of interest, and the clock /proc/cpuinfo reports (MHz, 0 if unknown)."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""

    def field(name: str) -> str:
        return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(name)), "")

    wanted = {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16"}
    flags = sorted(set(field("flags").split()) & wanted)
    model = field("model name") or platform.processor() or "unknown"
    return f"{model}; flags: {' '.join(flags) or 'none of interest'}", float(field("cpu MHz") or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    parser.add_argument("--slices", type=int, default=255, help="slices to predict (phantom: 255 lung slices)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[352, 288])
    parser.add_argument("--target-seconds", type=float, default=20.0)
    parser.add_argument("--target-speedup", type=float, default=3.0)
    parser.add_argument("--boost-mhz", type=float, default=4000.0, help="a generous clock for the peak column")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()

    network = load_model(bundle=args.bundle).network.eval()
    threads = torch.get_num_threads()
    machine, mhz = _cpuinfo()
    fp32_rates = gemm_rates(torch.float32)
    bf16_rates = gemm_rates(torch.bfloat16, n=512, repeats=2)  # ~100x slower where bf16 is emulated
    fp32, bf16 = max(fp32_rates.values()), max(bf16_rates.values())
    per_cycle = 64 if "avx512f" in machine.split() else 32
    peak = fma_peak(threads, args.boost_mhz, per_cycle)
    rows = [
        "| input | GFLOP / slice | plain loop GFLOP/s (batch 1, NCHW) | network GFLOP/s (batch 8, channels-last) | "
        f"GFLOP/s needed for {args.slices} slices in {args.target_seconds:g} s | "
        f"GFLOP/s needed for {args.target_speedup:g}x the plain loop | "
        f"{args.slices} slices at the fp32 GEMM rate (s) | at the FMA peak (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in args.sizes:
        flops = network_flops(network, size)
        plain = network_rate(network, size, flops, batch=1, channels_last=False)
        batched = network_rate(network, size, flops, batch=8, channels_last=True)
        total = flops * args.slices / 1e9
        rows.append(f"| {size}² | {flops / 1e9:.1f} | {plain:.1f} | {batched:.1f} | "
                    f"{total / args.target_seconds:.0f} | {args.target_speedup * plain:.0f} | "
                    f"{total / fp32:.1f} | {total / peak:.1f} |")
    table = "\n".join(rows)
    shares = conv_flop_shares(network, args.sizes[0])
    conv_total = sum(shares.values())
    share_3x3 = shares["3x3 stride 1"] / conv_total
    kinds = ", ".join(f"{k} {v / 1e9:.2f} GFLOP ({v / conv_total:.1%})" for k, v in shares.items())
    table += (f"\n\n- convolutions at {args.sizes[0]}², by kind: {kinds}. Winograd (3x3 stride 1 only) could speed the "
              f"whole network up by at most {winograd_ceiling(share_3x3, 2.25):.2f}x with F(2x2,3x3) (2.25x fewer "
              f"multiplies) or {winograd_ceiling(share_3x3, 4.0):.2f}x with F(4x4,3x3) (4x), were its transforms "
              "free")
    by_engine = "; ".join(f"{dt} " + ", ".join(f"{k} {v:.1f}" for k, v in r.items())
                          for dt, r in (("fp32", fp32_rates), ("bf16", bf16_rates)))
    summary = (f"- sustained GEMM ({threads} threads): fp32 {fp32:.1f} GFLOP/s, bf16 {bf16:.1f} GFLOP/s "
               f"(the faster engine; by engine: {by_engine})\n"
               f"- FMA peak: {threads} cores x {per_cycle} fp32 FLOPs per cycle x {args.boost_mhz:.0f} MHz = "
               f"{peak:.0f} GFLOP/s "
               f"(/proc/cpuinfo reports {mhz:.0f} MHz)\n"
               f"- machine: {machine}, torch {torch.__version__}")
    print(summary)
    print(table)
    if not args.no_docs:
        append_record("Inf-Net compute lower bound on this CPU",
                      f"- command: `python benchmarks/compute_bound.py --slices {args.slices}`\n"
                      f"- machine after the run: {describe()}\n{summary}\n\n{table}")


if __name__ == "__main__":
    main()
