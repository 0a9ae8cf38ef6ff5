"""CT severity score per lung and per zone (thirds of each lung along the body axis), Pan et al.'s 0-5 rule.

Radiologists grade COVID-19 pneumonia on CT by scoring each lung lobe 0-5 for the share of it that is involved
and adding the scores. The rule applied here is the one of Pan F, Ye T, Sun P, et al., "Time Course of Lung
Changes at Chest CT during Recovery from Coronavirus Disease 2019 (COVID-19)", Radiology 2020;295:715-721,
doi:10.1148/radiol.2020200370: 0 no involvement; 1 < 5 %; 2 5-25 %; 3 26-49 %; 4 50-75 %; 5 > 75 %
(five lobes, total 0-25).

covseg's lung mask tells the right lung (label 1) from the left (label 2) but has no lobes. The zones scored
here are therefore **thirds, not anatomical lobes**: each lung's axial extent (the slices holding that lung) is
cut into an upper, a middle and a lower third of equal height, and each of the 6 zones is scored with the rule
above on its involved share (``100 * infected voxels of the zone / lung voxels of the zone``); the total is
0-30. The published rule leaves the gaps between its integer bounds open; here a share ``p`` > 0 scores
1 if ``p < 5``, 2 if ``p <= 25``, 3 if ``p < 50``, 4 if ``p <= 75`` and 5 above. Infection counts only inside the
lung mask. Arrays are LPS ``[z, y, x]`` (z grows towards the head), as :mod:`covseg.io.read` gives them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from covseg.reports.counts import SliceCounts, slice_counts

__all__ = [
    "LUNGS",
    "RULE_TEXT",
    "SOURCE",
    "ZONES",
    "ZONES_NOTE",
    "LungSeverity",
    "SeverityReport",
    "ZoneSeverity",
    "compute_severity",
    "zone_score",
]

LUNGS = {"right": 1, "left": 2}
ZONES = ("upper", "middle", "lower")
SOURCE = ("Pan F, Ye T, Sun P, et al. Time Course of Lung Changes at Chest CT during Recovery from Coronavirus "
          "Disease 2019 (COVID-19). Radiology 2020;295:715-721. doi:10.1148/radiol.2020200370")
RULE_TEXT = ("Each zone is scored 0-5 by the share of its lung volume that is infected: 0 none; 1 less than 5 %; "
             "2 5-25 %; 3 26-49 %; 4 50-75 %; 5 more than 75 % (the per-lobe rule of Pan et al., Radiology 2020). "
             "Total = sum over the 6 zones (0-30).")
ZONES_NOTE = ("Zones are the upper, middle and lower thirds of each lung's extent along the body axis, not "
              "anatomical lobes: covseg's lung mask separates the right and left lung but not the lobes.")


def zone_score(percent: float | None) -> int | None:
    """Pan et al.'s 0-5 score of an involved share in % (``None`` for a zone without lung)."""
    if percent is None:
        return None
    if percent <= 0.0:
        return 0
    if percent < 5.0:
        return 1
    if percent <= 25.0:
        return 2
    if percent < 50.0:
        return 3
    if percent <= 75.0:
        return 4
    return 5


@dataclass
class ZoneSeverity:
    """One zone: ``slices`` is the half-open z range ``[start, stop)`` of the zone (LPS, 0 = most inferior)."""

    lung: str
    zone: str
    slices: tuple[int, int]
    lung_voxels: int
    infected_voxels: int
    percent: float | None
    score: int | None


@dataclass
class LungSeverity:
    """One lung: involvement over the whole lung and the sum of its zone scores (0-15)."""

    lung: str
    lung_voxels: int
    infected_voxels: int
    percent: float | None
    score: int


@dataclass
class SeverityReport:
    """Zones (right upper/middle/lower, then left), lungs and the total score, with the rule and its source."""

    zones: list[ZoneSeverity]
    lungs: list[LungSeverity]
    total_score: int
    max_score: int = 30
    rule: str = RULE_TEXT
    source: str = SOURCE
    note: str = ZONES_NOTE
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict."""
        d = asdict(self)
        for z in d["zones"]:
            z["slices"] = list(z["slices"])
        return d


def _percent(infected: int, total: int) -> float | None:
    return round(100.0 * infected / total, 3) if total else None


def _thirds(z_lo: int, z_hi: int) -> list[tuple[int, int]]:
    """Cut slices ``[z_lo, z_hi]`` (inclusive) into 3 parts of equal height: (lower, middle, upper), half-open."""
    height = z_hi - z_lo + 1
    cuts = [z_lo + int(round(height * k / 3.0)) for k in range(4)]
    return [(cuts[0], cuts[1]), (cuts[1], cuts[2]), (cuts[2], cuts[3])]


def compute_severity(lung: np.ndarray, infection: np.ndarray, counts: SliceCounts | None = None) -> SeverityReport:
    """Severity of ``infection`` (non-zero = infected) in ``lung`` (1 right, 2 left), both LPS ``[z, y, x]``;
    ``counts``: their :func:`covseg.reports.counts.slice_counts` when already taken."""
    counts = counts if counts is not None else slice_counts(lung, infection)  # checks the shapes
    per_lung = {1: (counts.right, counts.right_infection), 2: (counts.left, counts.left_infection)}
    zones: list[ZoneSeverity] = []
    lungs: list[LungSeverity] = []
    warnings: list[str] = []
    for name, label in LUNGS.items():
        per_slice, per_slice_inf = per_lung[label]
        held = np.nonzero(per_slice)[0]
        lung_scores = []
        if held.size == 0:
            warnings.append(f"no {name} lung in the lung mask: its zones are not scored")
            parts = [(0, 0)] * 3
        else:
            parts = _thirds(int(held[0]), int(held[-1]))
            if held[-1] - held[0] + 1 < 3:
                warnings.append(f"the {name} lung spans {held[-1] - held[0] + 1} slice(s): fewer than 3 zones hold "
                                "lung")
        for zone, (lo, hi) in zip(ZONES, reversed(parts)):  # upper third = highest z
            n_lung = int(per_slice[lo:hi].sum())
            n_inf = int(per_slice_inf[lo:hi].sum())
            pct = _percent(n_inf, n_lung)
            score = zone_score(pct)
            if score is not None:
                lung_scores.append(score)
            zones.append(ZoneSeverity(name, zone, (lo, hi), n_lung, n_inf, pct, score))
        n_lung = int(per_slice.sum())
        n_inf = int(per_slice_inf.sum())
        lungs.append(LungSeverity(name, n_lung, n_inf, _percent(n_inf, n_lung), int(sum(lung_scores))))
    total = int(sum(lu.score for lu in lungs))
    return SeverityReport(zones=zones, lungs=lungs, total_score=total, warnings=warnings)
