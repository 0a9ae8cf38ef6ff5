"""The scores of a batch over its volumes: ``summary.json`` ``scores``, the console's mean row and report.html's
table of them, each the mean of the per-volume scores (every volume counts once)."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest

from covseg.reports import VolumeResult, build_volume_report, format_console_table
from covseg.reports.batch import write_batch_report
from covseg.reports.html import VolumeEntry, render_report
from covseg.reports.score_summary import metric_stats, score_summary

SPACING = (2.0, 2.0, 5.0)


def _scored(name: str, shift: int) -> VolumeResult:
    """A volume whose mask is the label's square moved by ``shift`` pixels: a different Dice for each shift."""
    lung = np.zeros((3, 24, 24), np.uint8)
    lung[:, 2:22, 2:22] = 1
    label = np.zeros_like(lung)
    label[1, 6:14, 6:14] = 1
    infection = np.roll(label, shift, axis=2)
    report = build_volume_report(name, f"{name}.nii.gz", lung, infection, SPACING, label=label,
                                 timing_s={"total": 1.0})
    return VolumeResult(name, f"{name}.nii.gz", report=report)


def test_metric_stats_are_those_of_the_finite_values():
    stats = metric_stats([0.5, None, 0.7, float("nan"), 0.9, "x"])
    assert stats == {"n": 3, "mean": 0.7, "sd": pytest.approx(0.2), "median": 0.7, "min": 0.5, "max": 0.9}
    assert metric_stats([0.4])["sd"] == 0.0 and metric_stats([None, float("inf")]) is None


def test_summary_console_and_page_give_the_mean_over_volumes(tmp_path):
    results = [_scored("a", 0), _scored("b", 2), _scored("c", 4),
               VolumeResult("bad", "bad.nii.gz", status="error", error="bad.nii.gz: file is empty")]
    dices = [r.report.metrics["dice"] for r in results[:3]]
    assert len(set(dices)) == 3 and dices[0] == 1.0  # three different scores
    summary = json.loads(write_batch_report(results, tmp_path)[0].read_text())
    scores = summary["scores"]
    assert scores["n"] == 3 and scores["metrics"]["dice"]["n"] == 3
    assert scores["metrics"]["dice"]["mean"] == pytest.approx(statistics.fmean(dices), abs=1e-6)
    assert scores["metrics"]["dice"]["sd"] == pytest.approx(statistics.stdev(dices), abs=1e-6)
    assert scores["metrics"]["dice"]["min"] == min(dices) and "classes" not in scores
    assert list(summary).index("scores") < list(summary).index("volumes")
    mean_row = format_console_table(results).splitlines()[6]  # header, rule, 4 volumes, then the mean
    assert mean_row.startswith("mean of 3") and f"{statistics.fmean(dices):.3f}" in mean_row
    assert "mean of" not in format_console_table(results[:1])  # one volume: its row is the figure
    page = render_report([VolumeEntry(r.name, "ok", r.source, None, r.report.to_dict(), {}) for r in results[:3]], {})
    assert 'id="col-dice"' in page and 'id="scores"' in page and "over 3 volume(s)" in page
    assert f"<td>{statistics.fmean(dices):.4f}</td>" in page
    plain = render_report([VolumeEntry("u", "ok", "u.nii.gz", None, {**results[0].report.to_dict(), "metrics": None},
                                       {})], {})
    assert 'id="col-dice"' not in plain and 'id="scores"' not in plain  # no labels: the page as before


def test_per_class_scores_are_summarised_per_class():
    volumes = [{"status": "ok", "metrics": {"dice": d}, "class_metrics": {"ggo": {"dice": g}, "consolidation":
                                                                           {"dice": c}}}
               for d, g, c in ((0.8, 0.7, 0.4), (0.6, 0.5, 0.2))]
    scores = score_summary([*volumes, {"status": "error"}, {"status": "ok", "metrics": None}])
    assert scores["n"] == 2 and scores["metrics"]["dice"]["mean"] == pytest.approx(0.7)
    assert scores["classes"]["ggo"]["dice"]["mean"] == pytest.approx(0.6)
    assert scores["classes"]["consolidation"]["dice"]["median"] == pytest.approx(0.3)
    assert score_summary([{"status": "ok"}]) is None


def test_volumes_scored_with_other_label_values_are_said_to_be():
    """A folder's runs with other ``--label-values`` are averaged together; the summary lists the values and the
    page says they differ."""
    results = [_scored("a", 0), _scored("b", 2)]
    same = score_summary(r.report.to_dict() for r in results)
    assert same["label_values"] == [[1]]
    mixed_reports = [results[0].report.to_dict(), {**results[1].report.to_dict(), "label_values": [3]}]
    assert score_summary(mixed_reports)["label_values"] == [[1], [3]]
    page = render_report([VolumeEntry(r["name"], "ok", r["source"], None, r, {}) for r in mixed_reports], {})
    assert "scored with different label values (1; 3)" in page
    assert "different label values" not in render_report(
        [VolumeEntry(r.name, "ok", r.source, None, r.report.to_dict(), {}) for r in results], {})
