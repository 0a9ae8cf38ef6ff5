"""Time reading a generated 512x512x300 int16 .nii.gz: covseg's reader vs nibabel vs MONAI LoadImage.

Usage: ``python benchmarks/bench_read.py [--repeats 3] [--shape 300 512 512]``. Prints best and median
wall-clock seconds per reader (all return a float32 array); writes nothing outside a temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _time(fn: Callable[[], np.ndarray], repeats: int) -> tuple[float, float, tuple]:
    times, shape = [], ()
    for _ in range(repeats):
        start = time.perf_counter()
        arr = fn()
        times.append(time.perf_counter() - start)
        shape = tuple(arr.shape)
        del arr
    return min(times), statistics.median(times), shape


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=3, default=(300, 512, 512), metavar=("Z", "Y", "X"))
    args = parser.parse_args(argv)

    import nibabel as nib
    import SimpleITK as sitk
    from monai.transforms import LoadImage

    from covseg.io import read_volume
    from covseg.synthetic.phantom import make_chest_phantom
    from covseg.synthetic.phantom_nifti import write_phantom

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        phantom = make_chest_phantom(shape=tuple(args.shape))
        made = time.perf_counter() - start
        path = Path(tmp) / "ct.nii.gz"
        write_phantom(path, phantom)
        size_mb = path.stat().st_size / 1e6
        print(f"phantom {tuple(args.shape)} (z, y, x) generated in {made:.2f} s; {path.name} {size_mb:.1f} MB")

        loader = LoadImage(image_only=True)
        readers = {
            "covseg read_volume (SimpleITK, LPS, checks)": lambda: read_volume(path).array,
            "SimpleITK ReadImage + GetArrayFromImage": lambda: sitk.GetArrayFromImage(sitk.ReadImage(str(path))),
            "nibabel load + get_fdata(float32)": lambda: nib.load(str(path)).get_fdata(dtype=np.float32),
            "MONAI LoadImage(image_only=True)": lambda: np.asarray(loader(str(path))),
        }
        print(f"{'reader':46s} {'best s':>7s} {'median s':>9s}  shape")
        for name, fn in readers.items():
            best, median, shape = _time(fn, args.repeats)
            print(f"{name:46s} {best:7.2f} {median:9.2f}  {shape}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
