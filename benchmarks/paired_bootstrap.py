"""Two models' per-image figures on the same test images, side by side: the mean difference and its 95 % interval.

Usage: ``python benchmarks/paired_bootstrap.py A/per_image.csv B/per_image.csv [--metrics meanDic Sm meanEm MAE]
[--names A B] [--record]`` (the ``per_image.csv`` that a segmentation bundle's ``evaluate`` writes). The images are
resampled with their pairs kept (:func:`covseg.metrics.paired.paired_difference`); COVID-SemiSeg's test slices name
no patient, so they are taken as independent and the interval is, if anything, too narrow.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from machine import append_record  # noqa: E402

from covseg.metrics.paired import paired_difference  # noqa: E402

LOWER_IS_BETTER = {"MAE"}


def read_per_image(path: Path) -> dict[str, dict[str, float]]:
    with open(path, newline="") as handle:
        return {row["name"]: {k: float(v) for k, v in row.items() if k != "name"} for row in csv.DictReader(handle)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--names", nargs=2, default=None, metavar=("A", "B"))
    ap.add_argument("--metrics", nargs="+", default=["meanDic", "Sm", "meanEm", "MAE"])
    ap.add_argument("--record", action="store_true", help="append the table to docs/benchmarks.md")
    args = ap.parse_args()
    a, b = read_per_image(args.a), read_per_image(args.b)
    if set(a) != set(b):
        raise SystemExit(f"the two files score different images ({len(set(a) ^ set(b))} not in both)")
    names = sorted(a)
    label_a, label_b = args.names or (str(args.a), str(args.b))
    lines = [f"| figure ({len(names)} images) | {label_a} | {label_b} | difference | 95 % interval | "
             f"share of resamples where {label_b} is better |", "|---|---|---|---|---|---|"]
    for metric in args.metrics:
        r = paired_difference([a[n][metric] for n in names], [b[n][metric] for n in names])
        better = 1 - r["share_b_higher"] if metric in LOWER_IS_BETTER else r["share_b_higher"]
        lines.append(f"| {metric} | {r['mean_a']:.3f} | {r['mean_b']:.3f} | {r['difference']:+.3f} | "
                     f"{r['low']:+.3f} to {r['high']:+.3f} | {better:.2f} |")
    body = "\n".join([f"- command: `python benchmarks/paired_bootstrap.py {args.a} {args.b}`",
                      "- images resampled 10,000 times with their pairs kept; taken as independent", "", *lines])
    print(body)
    if args.record:
        append_record(f"Paired comparison: {label_b} against {label_a}", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
