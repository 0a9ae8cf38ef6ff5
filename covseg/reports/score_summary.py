"""The scores of a batch against its reference labels, over volumes: for each metric of
:data:`covseg.reports.label_scores.METRIC_KEYS` the number of volumes scored, mean, standard deviation, median,
lowest and highest; per class too where the volumes hold per-class scores. The mean over volumes is what a test
set's figure is (every volume counts once, whatever its size), as nnU-Net's and the papers' tables give it.

Used by ``summary.json`` (``scores``), the console table (its ``mean`` row) and ``report.html``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence

from covseg.reports.label_scores import METRIC_KEYS

__all__ = ["STATS", "metric_stats", "score_summary"]

STATS = ("n", "mean", "sd", "median", "min", "max")
"""The figures given for each metric: ``sd`` is the sample standard deviation (0 for one volume)."""


def metric_stats(values: Iterable[object]) -> dict[str, float | int] | None:
    """:data:`STATS` of the finite numbers among ``values`` (rounded to 6 digits), or None when there are none."""
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(float(v))]
    if not finite:
        return None
    sd = statistics.stdev(finite) if len(finite) > 1 else 0.0
    figures = (statistics.fmean(finite), sd, statistics.median(finite), min(finite), max(finite))
    return {"n": len(finite), **{k: round(v, 6) for k, v in zip(STATS[1:], figures)}}


def _over(scores: Sequence[Mapping[str, object]]) -> dict[str, dict]:
    return {k: stats for k in METRIC_KEYS if (stats := metric_stats(s.get(k) for s in scores)) is not None}


def score_summary(volumes: Iterable[Mapping[str, object]]) -> dict | None:
    """Over the volumes (``report.json`` / ``summary.json`` entries) that hold ``metrics``: ``{"n": volumes scored,
    "label_values": the distinct lists of label values they were scored with, "metrics": {metric: stats},
    "classes": {class: {metric: stats}}}`` (``classes`` only where some volume holds ``class_metrics``); None when
    no volume was scored."""
    scored = [v for v in volumes if isinstance(v.get("metrics"), Mapping) and v.get("status", "ok") == "ok"]
    if not scored:
        return None
    scored_values = {tuple(v.get("label_values") or ()) for v in scored}  # a folder's runs may differ in them
    out: dict = {"n": len(scored), "label_values": [list(t) for t in sorted(scored_values)],
                 "metrics": _over([v["metrics"] for v in scored])}
    per_class: dict[str, list[Mapping[str, object]]] = {}
    for v in scored:
        for name, scores in (v.get("class_metrics") or {}).items():
            if isinstance(scores, Mapping):
                per_class.setdefault(name, []).append(scores)
    if per_class:
        out["classes"] = {name: _over(scores) for name, scores in per_class.items()}
    return out
