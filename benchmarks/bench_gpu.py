"""Time ``covseg infer --device cuda`` end to end on the 512x512x300 chest phantom, on a CUDA GPU.

Usage: ``python benchmarks/bench_gpu.py [--shape 300 512 512] [--batch-size 32] [--no-docs]``.

Without a CUDA device it prints why and exits 0 (nothing is measured). With one, it writes the phantom, then runs
``covseg infer phantom.nii.gz --device cuda`` in a fresh subprocess, once, and reports its wall time (interpreter
start, imports, model loading, reading, lung mask, network, writing: everything a user waits for), the report's
step timings, the precision that ran, the GPU's name, and the issue-15 target (<= 5 s wall on an H200; JCS reports
19 s per 300-slice case on an RTX 2080 Ti). The record is appended to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 5.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(300, 512, 512), metavar=("Z", "Y", "X"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-docs", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print(f"bench_gpu: no CUDA device here (torch {torch.__version__}, CUDA build "
              f"{torch.version.cuda or 'none'}): nothing measured")
        return 0
    from machine import describe

    from covseg.synthetic.phantom import make_chest_phantom
    from covseg.synthetic.phantom_nifti import write_phantom

    gpu = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory(prefix="covseg-gpu-bench-") as tmp:
        tmp = Path(tmp)
        ct = write_phantom(tmp / "phantom.nii.gz", make_chest_phantom(shape=tuple(args.shape)))["ct"]
        out = tmp / "out"
        cmd = [sys.executable, "-m", "covseg", "infer", str(ct), "--out", str(out), "--device", "cuda",
               "--batch-size", str(args.batch_size), "--no-progress"]
        print("running:", " ".join(cmd), flush=True)
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
            return 1
        volume = json.loads((out / "summary.json").read_text())["volumes"][0]
    timing = volume.get("timing_s", {})
    model = volume.get("model", {})
    steps = ", ".join(f"{k} {timing[k]:.2f} s" for k in ("read", "lung_mask", "predict", "postprocess", "write",
                                                         "total") if k in timing)
    line = (f"- {gpu}: wall {wall:.1f} s ({volume.get('predicted_slices', '?')} slices predicted, "
            f"{model.get('precision', '?')}, batch {args.batch_size}); in-process: {steps}; target <= {TARGET_S:g} s: "
            f"{'met' if wall <= TARGET_S else 'NOT met'}")
    print(line)
    if not args.no_docs:
        when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        record = (f"\n## `covseg infer --device cuda`, {args.shape[2]}x{args.shape[1]}x{args.shape[0]} phantom "
                  f"({when})\n\n- command: `python benchmarks/bench_gpu.py --batch-size {args.batch_size}` (one run, "
                  f"a fresh process: wall includes start-up)\n- host: {describe()}; torch {torch.__version__}\n"
                  f"{line}\n")
        with open(REPO / "docs" / "benchmarks.md", "a") as fh:
            fh.write(record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
