"""Time ``covseg.transforms.lung.lung_mask`` on a synthetic 512x512x300 chest volume.

Usage: ``python benchmarks/bench_lung_mask.py [--repeats 3] [--shape 300 512 512] [--spacing 0.7 0.7 1.0]``.
Uses ``covseg.synthetic.phantom.make_chest_phantom`` (its known lung labels give a Dice check), or a
simple built-in chest when that module is unavailable. Prints best / median wall-clock seconds, the
working grid used, and the Dice of each lung against the phantom's labels. Writes nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def simple_chest(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A plain chest (body, fat rim, two ellipsoid lungs with noise, trachea), int16 HU and labels."""
    nz, ny, nx = shape
    z, y, x = np.ogrid[:nz, :ny, :nx]
    hu = np.full(shape, -1000, np.int16)
    body = ((x - nx / 2) / (0.45 * nx)) ** 2 + ((y - ny / 2) / (0.34 * ny)) ** 2 <= 1
    inner = ((x - nx / 2) / (0.41 * nx)) ** 2 + ((y - ny / 2) / (0.30 * ny)) ** 2 <= 1
    hu[np.broadcast_to(body, shape)] = -100
    hu[np.broadcast_to(inner, shape)] = 40
    labels = np.zeros(shape, np.uint8)
    for label, cx, ax in ((1, 0.31, 0.13), (2, 0.69, 0.12)):
        q = ((x - cx * nx) / (ax * nx)) ** 2 + ((y - ny / 2) / (0.23 * ny)) ** 2 + ((z - 0.45 * nz) / (0.42 * nz)) ** 2
        labels[q <= 1] = label
    rng = np.random.default_rng(0)
    hu[labels > 0] = (-850 + rng.normal(0, 25, int((labels > 0).sum()))).astype(np.int16)
    tube = ((x - nx / 2) ** 2 + (y - 0.42 * ny) ** 2 <= (0.03 * nx) ** 2) & (z >= int(0.6 * nz))
    hu[np.broadcast_to(tube, shape) & (labels == 0)] = -1000
    return hu, labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=3, default=(300, 512, 512), metavar=("Z", "Y", "X"))
    parser.add_argument("--spacing", type=float, nargs=3, default=(0.7, 0.7, 1.0), metavar=("SX", "SY", "SZ"))
    args = parser.parse_args(argv)
    shape = tuple(args.shape)
    spacing = tuple(args.spacing)

    from covseg.transforms.lung import lung_mask
    from covseg.transforms.lung_grid import working_factors

    start = time.perf_counter()
    try:
        from covseg.synthetic.phantom import make_chest_phantom

        phantom = make_chest_phantom(shape=shape, spacing=spacing, seed=0)
        hu, labels, source = phantom.hu, phantom.lung_labels, "covseg.synthetic.phantom"
    except ImportError:
        hu, labels = simple_chest(shape)
        source = "built-in simple chest"
    made = time.perf_counter() - start
    print(f"volume {shape} (z, y, x) {hu.dtype} at {spacing} mm from {source}, generated in {made:.2f} s")
    f = working_factors(hu.shape, spacing)
    print(f"working grid: blocks {f} (z, y, x) -> {tuple(-(-n // k) for n, k in zip(hu.shape, f))}")

    times = []
    mask = np.zeros(0)
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        mask = lung_mask(hu, spacing)
        times.append(time.perf_counter() - t0)
    print(f"lung_mask: best {min(times):.2f} s, median {statistics.median(times):.2f} s over {args.repeats} runs")

    for label, name in ((1, "right"), (2, "left")):
        a, b = mask == label, labels == label
        dice = 2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1)
        print(f"{name:5s} lung: {int(a.sum()):9d} voxels (truth {int(b.sum()):9d}), Dice {dice:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
