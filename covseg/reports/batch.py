"""Batch results: ``summary.json`` + ``summary.csv`` in the output folder, and a plain-text console table."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from covseg.io.atomic import atomic_write_text
from covseg.reports.volume import METRIC_KEYS, VolumeReport

__all__ = ["SUMMARY_COLUMNS", "VolumeResult", "format_console_table", "summary_dict", "write_batch_report"]


@dataclass
class VolumeResult:
    """Outcome of one input volume: ``status`` ``"ok"`` with a ``report``, or ``"error"`` with a one-line ``error``."""

    name: str
    source: str
    status: str = "ok"
    report: VolumeReport | None = None
    error: str | None = None
    out_dir: str | None = None

    @property
    def ok(self) -> bool:
        """True when the volume was processed and its outputs written."""
        return self.status == "ok"

    def to_dict(self) -> dict:
        """Summary entry: the full report for a success, name/source/error for a failure."""
        if self.report is not None:
            d = self.report.to_dict()
            d["out_dir"] = self.out_dir
            return d
        return {"name": self.name, "source": self.source, "status": self.status, "error": self.error}


SUMMARY_COLUMNS = (
    "name", "status", "source", "lung_ml", "right_lung_ml", "left_lung_ml", "infection_ml",
    "lung_involvement_percent", "n_slices", "lung_slices", "infected_slices", *METRIC_KEYS, "seconds",
    "warnings", "error",
)


def summary_dict(results: Sequence[VolumeResult], meta: dict | None = None) -> dict:
    """The ``summary.json`` object: counts, run metadata and one entry per volume (in input order)."""
    n_ok = sum(r.ok for r in results)
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(meta or {}),
        "n_volumes": len(results),
        "n_ok": n_ok,
        "n_failed": len(results) - n_ok,
        "volumes": [r.to_dict() for r in results],
    }


def _csv_row(r: VolumeResult) -> list:
    if r.report is None:
        return [r.name, r.status, r.source] + [""] * (len(SUMMARY_COLUMNS) - 5) + ["", r.error or ""]
    rep = r.report
    metrics = rep.metrics or {}
    return [
        rep.name, rep.status, rep.source, rep.lung_ml, rep.right_lung_ml, rep.left_lung_ml, rep.infection_ml,
        rep.lung_involvement_percent, rep.n_slices, rep.lung_slices, rep.infected_slices,
        *(metrics.get(k, "") for k in METRIC_KEYS), rep.timing_s.get("total", ""), "; ".join(rep.warnings), "",
    ]


def write_batch_report(results: Sequence[VolumeResult], out_dir: str | Path,
                       meta: dict | None = None) -> tuple[Path, Path]:
    """Write ``<out_dir>/summary.json`` and ``<out_dir>/summary.csv`` atomically; return their paths."""
    out_dir = Path(out_dir)
    json_path = atomic_write_text(out_dir / "summary.json", json.dumps(summary_dict(results, meta), indent=2) + "\n")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(SUMMARY_COLUMNS)
    for r in results:
        writer.writerow(_csv_row(r))
    csv_path = atomic_write_text(out_dir / "summary.csv", buf.getvalue())
    return json_path, csv_path


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def format_console_table(results: Sequence[VolumeResult]) -> str:
    """Aligned plain-text table, one row per volume; warnings and errors listed below it."""
    with_metrics = any(r.report is not None and r.report.metrics for r in results)
    head = ["volume", "status", "lung mL", "right", "left", "infect. mL", "% lung", "slices inf/lung/all"]
    if with_metrics:
        head += ["Dice", "Sen.", "Spec.", "Prec.", "MAE"]
    head += ["time s"]
    rows = []
    notes = []
    for r in results:
        if r.report is None:
            rows.append([r.name, "FAILED"] + [""] * (len(head) - 2))
            notes.append(f"{r.name}: error: {r.error}")
            continue
        rep = r.report
        row = [rep.name, "ok", _fmt(rep.lung_ml), _fmt(rep.right_lung_ml), _fmt(rep.left_lung_ml),
               _fmt(rep.infection_ml), _fmt(rep.lung_involvement_percent, 2),
               f"{rep.infected_slices}/{rep.lung_slices}/{rep.n_slices}"]
        if with_metrics:
            m = rep.metrics or {}
            row += [_fmt(m.get(k), 3) if m else "-" for k in ("dice", "sensitivity", "specificity", "precision", "mae")]
        row += [_fmt(rep.timing_s.get("total"), 1)]
        rows.append(row)
        notes += [f"{rep.name}: warning: {w}" for w in rep.warnings]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    numeric = [i >= 2 for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).rjust(w) if num else str(c).ljust(w)
                         for c, w, num in zip(cells, widths, numeric)).rstrip()

    out = [line(head), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]
    if notes:
        out += [""] + notes
    return "\n".join(out)
