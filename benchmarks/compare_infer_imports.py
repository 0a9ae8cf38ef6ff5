"""What ``covseg infer`` imports before its first slice, timed side by side for this tree and another checkout.

Usage: ``python benchmarks/compare_infer_imports.py --before DIR [--pairs 5]``, where ``DIR`` is another checkout of
covseg (say ``git worktree add /tmp/before HEAD~1``). Each pair runs two fresh interpreters one after the other,
``DIR``'s covseg first (``PYTHONPATH=DIR``) and then this tree's; each times ``import torch`` and then the imports of
``bench_infer.py``'s ``INFER_IMPORTS`` (the infer path up to its first slice, ONNX Runtime left out). Prints one line
per process and the range of each; records nothing (quote the output where it is used).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_infer import INFER_IMPORTS, imports_after_torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="another covseg checkout")
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"before": [], "this tree": []}
    for _ in range(args.pairs):
        for label, tree in (("before", args.before.resolve()), ("this tree", REPO)):
            torch_s, after_s = imports_after_torch(INFER_IMPORTS, tree, repeats=1)
            times[label].append(after_s)
            print(f"{label:9s}  import torch {torch_s:.2f} s, then the infer imports {after_s:.2f} s", flush=True)
    for label, seconds in times.items():
        print(f"{label}: {min(seconds):.2f}-{max(seconds):.2f} s after import torch ({args.pairs} processes)")


if __name__ == "__main__":
    main()
