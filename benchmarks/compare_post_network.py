"""What ``covseg infer`` does after the network (post-processing, report, writing), side by side for this tree and
another checkout.

Usage: ``python benchmarks/compare_post_network.py --before DIR [--pairs 3] [--shape 300 512 512]``, where ``DIR``
is another checkout of covseg (say ``git worktree add /tmp/before HEAD~1``). The chest phantom is written once; each
pair then runs ``covseg infer`` on it twice in fresh processes, ``DIR``'s covseg first (``PYTHONPATH=DIR``) and then
this tree's, with ``bench_infer.py``'s zero-cost threshold model (``--model bench-threshold``), so the network
takes no time and the figures are the pipeline's own. Prints, per run, the report's ``postprocess``, ``report`` and
``write`` seconds, all that follows the network (the report's ``compute`` less its ``predict``, plus ``write``), the
process's wall time and its peak RSS; then the range of each tree's figure. Records nothing (quote the output
where it is used).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AFTER_NETWORK = ("postprocess", "report", "write")


def _run(tree: Path, ct: Path, out: Path) -> tuple[dict[str, float], float, float]:
    """The report's timings, the wall seconds and the peak RSS (MB, ``os.wait4``) of one null-model ``covseg infer``
    run with ``tree``'s covseg."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, str(tree / "benchmarks" / "bench_infer.py"), "--child", "infer", str(ct), "--out",
           str(out), "--model", "bench-threshold", "--no-progress"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"covseg infer failed with {tree}'s covseg")
    timing = json.loads((out / ct.name.removesuffix(".nii.gz") / "report.json").read_text())["timing_s"]
    return timing, wall, usage.ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="another covseg checkout")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=3, default=(300, 512, 512), metavar=("Z", "Y", "X"))
    args = parser.parse_args()
    from covseg.synthetic.phantom import make_chest_phantom
    from covseg.synthetic.phantom_nifti import write_phantom

    sums: dict[str, list[float]] = {"before": [], "this tree": []}
    with tempfile.TemporaryDirectory(prefix="covseg-post-") as tmp:
        ct = write_phantom(Path(tmp) / "phantom.nii.gz", make_chest_phantom(shape=tuple(args.shape)))["ct"]
        for pair in range(args.pairs):
            for label, tree in (("before", args.before.resolve()), ("this tree", REPO)):
                timing, wall, rss = _run(tree, ct, Path(tmp) / f"out-{pair}-{label.replace(' ', '-')}")
                after = timing["compute"] - timing["predict"] + timing["write"]  # whatever the steps are called
                sums[label].append(after)
                parts = ", ".join(f"{k} {timing[k]:.2f}" for k in AFTER_NETWORK)
                print(f"{label:9s}  {parts}: after the network {after:.2f} s; wall {wall:.2f} s; peak RSS "
                      f"{rss:.0f} MB", flush=True)
    for label, seconds in sums.items():
        print(f"{label}: {min(seconds):.2f}-{max(seconds):.2f} s after the network ({args.pairs} runs)")


if __name__ == "__main__":
    main()
