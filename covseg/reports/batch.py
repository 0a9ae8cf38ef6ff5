"""Batch results: ``summary.json`` + ``summary.csv`` in the output folder, and a plain-text console table.

The summary describes the output folder, not just the last run: :func:`write_batch_report` merges this
run's volumes into the existing ``summary.json`` under the folder's lock (:mod:`covseg.io.outlock`), so
runs one after the other, or at the same time, into one folder never drop each other's finished volumes.
A volume of this run replaces its own earlier entry; a volume that failed this time keeps its earlier
finished entry (its folder was not replaced) with ``last_error`` added; finished volume folders that
have no entry (their run was killed before its summary) are added from their ``report.json``. The top
level holds this run's metadata; ``runs`` lists every run's. A ``summary.json`` that cannot be read (cut short,
not JSON, not a summary) is kept as ``summary.unreadable-<UTC time>.json`` beside the new one, with a warning:
the new summary rebuilds the volumes from their ``report.json`` but cannot recover the earlier runs' history.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from covseg.io.atomic import atomic_write_text
from covseg.io.errors import CovsegInputError
from covseg.io.outlock import output_lock
from covseg.io.strict_json import json_text
from covseg.reports.label_scores import METRIC_KEYS
from covseg.reports.score_summary import score_summary
from covseg.reports.volume import VolumeReport

__all__ = [
    "SUMMARY_COLUMNS",
    "VolumeResult",
    "format_console_table",
    "merge_summary",
    "read_summary",
    "recorded_sources",
    "summary_dict",
    "write_batch_report",
]

MAX_RUNS_KEPT = 100
_log = logging.getLogger(__name__)


@dataclass
class VolumeResult:
    """Outcome of one input volume: ``status`` ``"ok"`` with a ``report``, or ``"error"`` with a one-line ``error``."""

    name: str
    source: str
    status: str = "ok"
    report: VolumeReport | None = None
    error: str | None = None
    out_dir: str | None = None
    key: str | None = None
    """The input's identity (:func:`covseg.io.naming.source_key`): who owns the output folder ``name``."""
    earlier: bool = False
    """Done by an earlier run and kept (``--continue``: :mod:`covseg.engines.inference.resume`), not computed again."""

    @property
    def ok(self) -> bool:
        """True when the volume was processed and its outputs written."""
        return self.status == "ok"

    def to_dict(self) -> dict:
        """Summary entry: the full report for a success, name/source/error for a failure."""
        if self.report is not None:
            d = self.report.to_dict()
            d["out_dir"] = self.out_dir
        else:
            d = {"name": self.name, "source": self.source, "status": self.status, "error": self.error}
        if self.key:
            d["source_key"] = self.key
        return d


SUMMARY_COLUMNS = (
    "name", "status", "source", "lung_ml", "right_lung_ml", "left_lung_ml", "infection_ml",
    "lung_involvement_percent", "n_slices", "lung_slices", "infected_slices", "diagnosis", *METRIC_KEYS, "label_values",
    "seconds",
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


def _csv_row(entry: dict) -> list:
    if entry.get("status") != "ok" or "lung_ml" not in entry:
        return [entry.get("name"), entry.get("status"), entry.get("source")] + [""] * (len(SUMMARY_COLUMNS) - 5) + [
            "", entry.get("error") or ""]
    metrics = entry.get("metrics") or {}
    return [
        entry["name"], entry["status"], entry.get("source"), entry.get("lung_ml"), entry.get("right_lung_ml"),
        entry.get("left_lung_ml"), entry.get("infection_ml"), entry.get("lung_involvement_percent"),
        entry.get("n_slices"), entry.get("lung_slices"), entry.get("infected_slices"),
        (entry.get("diagnosis") or {}).get("decision", ""), *(metrics.get(k, "") for k in METRIC_KEYS),
        ",".join(str(v) for v in entry.get("label_values") or ()),
        (entry.get("timing_s") or {}).get("total", ""),
        "; ".join(entry.get("warnings") or []), entry.get("last_error") or "",
    ]


def read_summary(out_dir: str | Path) -> dict | None:
    """The output folder's ``summary.json`` as a dict, or ``None`` when missing or unreadable."""
    return _read_summary(Path(out_dir) / "summary.json")[0]


def _read_summary(path: Path) -> tuple[dict | None, str | None]:
    """``(summary, None)``; ``(None, reason)`` when the file exists but is no summary; ``(None, None)`` when absent."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    except ValueError as exc:
        return None, f"is not valid JSON ({' '.join(str(exc).split())})"
    if isinstance(data, dict) and isinstance(data.get("volumes"), list):
        return data, None
    return None, "is not a covseg summary (no 'volumes' list)"


def _keep_unreadable(path: Path, reason: str) -> None:
    """Move an unreadable summary aside (never overwritten: it may hold the only record of earlier runs)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    kept = path.with_name(f"summary.unreadable-{stamp}.json")
    n = 1
    while kept.exists():
        n += 1
        kept = path.with_name(f"summary.unreadable-{stamp}-{n}.json")
    path.rename(kept)
    _log.warning("%s %s: kept as %s; the new summary lists the volumes from their report.json, without the earlier "
                 "runs' history", path, reason, kept.name)


def recorded_sources(out_dir: str | Path) -> dict[str, str]:
    """Volume name -> source key of the volumes recorded in the folder's summary (for output naming)."""
    summary = read_summary(out_dir) or {}
    return {v["name"]: v["source_key"] for v in summary.get("volumes", [])
            if isinstance(v, dict) and v.get("name") and v.get("source_key")}


def merge_summary(old: dict | None, results: Sequence[VolumeResult], out_dir: Path, meta: dict | None) -> dict:
    """This run's ``results`` merged into the ``old`` summary of ``out_dir`` (see the module docstring)."""
    entries: dict[str, dict] = {}
    for v in (old or {}).get("volumes", []):
        if isinstance(v, dict) and isinstance(v.get("name"), str):
            entries[v["name"]] = v
    for r in results:
        new = r.to_dict()
        before = entries.get(r.name)
        if not r.ok and before is not None and before.get("status") == "ok" and \
                (out_dir / r.name / "report.json").is_file():
            before = dict(before)
            before["last_error"] = r.error
            entries[r.name] = before
        else:
            entries[r.name] = new
    this_run = {r.name for r in results}
    for name, v in list(entries.items()):  # an earlier finished volume whose folder is gone: deleted by the user
        if name not in this_run and v.get("status") == "ok" and not (out_dir / name / "report.json").is_file():
            del entries[name]
    for report in sorted(out_dir.glob("*/report.json")):  # finished folders of a run killed before its summary
        name = report.parent.name
        if name not in entries and not name.startswith("."):
            try:
                entry = json.loads(report.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(entry, dict):
                entry["out_dir"] = str(report.parent)
                entries[name] = entry
    summary = summary_dict([], meta)
    runs = [*(old or {}).get("runs", []), {k: v for k, v in summary.items() if k not in ("n_volumes", "n_ok",
                                                                                          "n_failed", "volumes")}]
    volumes = list(entries.values())
    n_ok = sum(v.get("status") == "ok" for v in volumes)
    for key in ("volumes", "runs"):  # the counts and scores first, then the volumes and the runs
        summary.pop(key, None)
    summary.update(n_volumes=len(volumes), n_ok=n_ok, n_failed=len(volumes) - n_ok, scores=score_summary(volumes),
                   volumes=volumes, runs=runs[-MAX_RUNS_KEPT:])
    return summary


def write_batch_report(results: Sequence[VolumeResult], out_dir: str | Path, meta: dict | None = None,
                       on_wait: Callable[[str], None] | None = None) -> tuple[Path, Path]:
    """Merge ``results`` into ``<out_dir>/summary.json`` and ``summary.csv`` (atomic writes, under the lock).

    Returns their paths. A failure to write (full disk, permissions) raises a one-line
    :class:`CovsegInputError`; the volume folders already written are not touched.
    """
    out_dir = Path(out_dir)
    try:
        with output_lock(out_dir, on_wait):
            old, unreadable = _read_summary(out_dir / "summary.json")
            if unreadable:
                _keep_unreadable(out_dir / "summary.json", unreadable)
            summary = merge_summary(old, results, out_dir, meta)
            json_path = atomic_write_text(out_dir / "summary.json", json_text(summary) + "\n")
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerow(SUMMARY_COLUMNS)
            for entry in summary["volumes"]:
                writer.writerow(_csv_row(entry))
            csv_path = atomic_write_text(out_dir / "summary.csv", buf.getvalue())
    except OSError as exc:
        raise CovsegInputError(out_dir, f"summary cannot be written ({exc.strerror or exc})") from None
    return json_path, csv_path


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def kept_note(results: Sequence[VolumeResult]) -> str:
    """`` (N kept from an earlier run)`` for a batch's last line when ``--continue`` kept volumes, else ``""``."""
    n = sum(r.earlier for r in results)
    return f" ({n} kept from an earlier run)" if n else ""


def outcome_line(results: Sequence[VolumeResult], out: str | Path, verb: str = "done",
                 seconds: float | None = None) -> str:
    """The last line a finished batch prints: the volumes ``verb`` (and failed), the time, where the outputs are."""
    n_failed = sum(not r.ok for r in results)
    took = "" if seconds is None else f" in {seconds:.1f} s"
    return (f"{len(results) - n_failed} of {len(results)} volume(s) {verb}{kept_note(results)}{took}; outputs in "
            f"{out}/ (summary.json, summary.csv, report.html)")


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
        row = [rep.name, "earlier" if r.earlier else "ok", _fmt(rep.lung_ml), _fmt(rep.right_lung_ml),
               _fmt(rep.left_lung_ml), _fmt(rep.infection_ml), _fmt(rep.lung_involvement_percent, 2),
               f"{rep.infected_slices}/{rep.lung_slices}/{rep.n_slices}"]
        if with_metrics:
            m = rep.metrics or {}
            row += [_fmt(m.get(k), 3) if m else "-" for k in ("dice", "sensitivity", "specificity", "precision", "mae")]
        row += [_fmt(rep.timing_s.get("total"), 1)]
        rows.append(row)
        notes += [f"{rep.name}: warning: {w}" for w in rep.warnings]
    scores = score_summary(r.report.to_dict() for r in results if r.report is not None) if with_metrics else None
    if scores is not None and scores["n"] > 1:  # the figure of a test set: the mean over its volumes
        means = [scores["metrics"].get(k, {}).get("mean") for k in ("dice", "sensitivity", "specificity",
                                                                     "precision", "mae")]
        rows.append([f"mean of {scores['n']}", ""] + [""] * 6 + [_fmt(m, 3) if m is not None else "-" for m in means]
                    + [""])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    numeric = [i >= 2 for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).rjust(w) if num else str(c).ljust(w)
                         for c, w, num in zip(cells, widths, numeric)).rstrip()

    out = [line(head), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]
    if notes:
        out += [""] + notes
    return "\n".join(out)
