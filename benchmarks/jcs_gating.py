"""Joint diagnosis and classifier gating on the real non-COVID CT volumes (../shared/data/ct-volumes: two chest
CTs and an abdominal CT that shows the lung bases).

Per volume, three runs of the shipped bundles through the command line:
``covseg infer`` (Inf-Net alone), ``covseg infer --gate`` (slices the JCS classifier scores below the bundle's
gate threshold are skipped) and ``covseg diagnose`` (classify, decide, segment positives only). Records the
decision, the % of lung marked as infection, the slices Inf-Net ran on and the network time (``predict`` in
report.json, with the classifier gate's share, ``timing_s.gate``; a shared machine: compare within a row only).

Run:  python benchmarks/jcs_gating.py [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from machine import append_record  # noqa: E402

from covseg.cli.main import main as covseg  # noqa: E402
from covseg.reports.diagnosis import verdict  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "ct-volumes"
VOLUMES = {"chest-cip64": DATA / "chest-cip64" / "ct.nii.gz", "chest-2slice": DATA / "chest-2slice" / "ct.nii.gz",
           "abdomen-totalseg": DATA / "abdomen-totalseg" / "example_ct.nii.gz"}  # lung bases only


def _report(out: Path) -> dict:
    folder = next(p for p in out.iterdir() if p.is_dir())
    report = json.loads((folder / "report.json").read_text())
    diag = folder / "diagnosis.json"
    return {"report": report, "diagnosis": json.loads(diag.read_text()) if diag.exists() else None}


def _network_seconds(timing: dict) -> str:
    """``predict`` seconds (classifier gate, if any, plus Inf-Net), with the gate's share when it ran."""
    text = f"{timing.get('predict', 0.0):.1f}"
    return text + (f" ({timing['gate']:.1f})" if "gate" in timing else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record", action="store_true", help="append the table to docs/benchmarks.md")
    args = ap.parse_args()
    lines = ["| volume | run | decision (positive / classified of lung slices) | % lung marked | slices segmented | "
             "network time s (the gate's share) |", "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in VOLUMES.items():
            runs = {"infer": ["infer"], "infer --gate": ["infer", "--gate"], "diagnose": ["diagnose"]}
            for label, cmd in runs.items():
                out = Path(tmp) / name / label.replace(" ", "_")
                code = covseg([*cmd, str(path), "--out", str(out), "--no-progress", "--threads", "1"])
                if code != 0:
                    lines.append(f"| {name} | {label} | failed (exit {code}) | | | |")
                    continue
                r = _report(out)
                rep, d = r["report"], r["diagnosis"]
                classified = None if d is None else d.get("classified_slices", d["lung_slices"])
                decision = "-" if d is None else (f"{verdict(d)} "
                                                  f"({d['positive_slices']} / {classified} of {d['lung_slices']})")
                lines.append(f"| {name} | `{label}` | {decision} | {rep['lung_involvement_percent']:.2f} | "
                             f"{rep['predicted_slices']} / {rep['lung_slices']} | "
                             f"{_network_seconds(rep['timing_s'])} |")
    load = os.getloadavg()[0]
    text = "\n".join(lines) + f"\n\nLoad average at the end: {load:.1f} (2 cores, shared)."
    print(text)
    if args.record:
        append_record("JCS joint diagnosis and gating on real non-COVID scans",
                      f"`python benchmarks/jcs_gating.py --record`\n\n{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
