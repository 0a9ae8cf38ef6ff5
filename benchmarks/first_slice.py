"""Seconds from starting ``covseg infer`` to its first network batch, for one or more source trees, side by side.

Usage: ``python benchmarks/first_slice.py [--tree PATH ...] [--repeats 6] [--shape 300 512 512] [--no-docs]``.

Each run is a fresh ``covseg infer <phantom> --out DIR`` (the default Inf-Net bundle) of one tree (``PYTHONPATH``
= that tree), stopped once its first network batch has begun (``bench_infer.py``'s child notes the time); the
trees take turns, so a change in the machine's speed hits them alike. Also measured here, alone: the phantom's
read + lung mask (what any run waits for before its first slice) and ``import torch``; what start-up adds before
the first slice is the median time minus that read + lung mask, against the issue-15 target ``import torch`` + 1 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def to_first_slice(tree: Path, ct: Path, out: Path) -> float:
    """One run of ``tree``'s ``covseg infer``, killed after its first network batch; seconds to that batch."""
    first = out.with_suffix(".first")
    env = {**os.environ, "PYTHONPATH": str(tree), "COVSEG_BENCH_FIRST_SLICE": str(first)}
    started = time.time()
    proc = subprocess.Popen([sys.executable, str(HERE / "bench_infer.py"), "--child", "infer", str(ct), "--out",
                             str(out), "--no-progress"], cwd=tree, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while not first.exists() and proc.poll() is None:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    if not first.exists():
        raise RuntimeError(f"{tree}: covseg infer exited ({proc.returncode}) before its first network batch")
    time.sleep(0.05)  # the time is written just after the file is created
    return float(first.read_text()) - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", type=Path, help="source tree (repeatable; default: this one)")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--shape", type=int, nargs=3, default=(300, 512, 512), metavar=("Z", "Y", "X"))
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    trees = [t.resolve() for t in (args.tree or [REPO])]
    sys.path.insert(0, str(REPO))
    from bench_infer import _import_seconds, _read_and_mask_seconds
    from machine import append_record, describe

    from covseg.synthetic.phantom import make_chest_phantom
    from covseg.synthetic.phantom_nifti import write_phantom

    before = describe()
    with tempfile.TemporaryDirectory(prefix="covseg-first-") as tmp:
        ct = write_phantom(Path(tmp) / "phantom.nii.gz", make_chest_phantom(shape=tuple(args.shape)))["ct"]
        read_mask = min(_read_and_mask_seconds(ct) for _ in range(2))
        torch_s = _import_seconds("import torch")
        times: dict[Path, list[float]] = {t: [] for t in trees}
        for i in range(args.repeats):
            for t in trees:
                times[t].append(to_first_slice(t, ct, Path(tmp) / f"out{i}_{trees.index(t)}"))
                print(f"{t}: first slice at {times[t][-1]:.2f} s", flush=True)
    lines = ["| tree | commit | median s to the first slice | min s | runs | start-up added (median - read + lung "
             "mask) s | target (import torch + 1 s) |", "|---|---|---:|---:|---|---:|---|"]
    for t, v in times.items():
        commit = subprocess.run(["git", "-C", str(t), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip() or "?"
        added = statistics.median(v) - read_mask
        lines.append(f"| {t.name} | {commit} | {statistics.median(v):.2f} | {min(v):.2f} | "
                     f"{' '.join(f'{x:.2f}' for x in v)} | {added:.2f} | "
                     f"{'met' if added <= torch_s + 1 else 'NOT met'} ({torch_s + 1:.2f} s) |")
    body = "\n".join([
        f"- command: `python benchmarks/first_slice.py{''.join(f' --tree {t}' for t in trees)} --repeats "
        f"{args.repeats}` (fresh `covseg infer` processes, default Inf-Net bundle, the trees taking turns; each run "
        "stopped at its first network batch)",
        f"- data: the generated {args.shape[2]}x{args.shape[1]}x{args.shape[0]} chest phantom, NIfTI",
        f"- machine before: {before}; after: {describe()}",
        f"- alone, in the benchmark's process: read + lung mask of the phantom {read_mask:.2f} s (best of 2); "
        f"`import torch` {torch_s:.2f} s (fresh process, best of 3)",
        "", *lines])
    print(body)
    if not args.no_docs:
        append_record("`covseg infer`: time to the first slice, side by side", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
