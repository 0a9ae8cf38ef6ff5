"""Severity score: Pan et al.'s 0-5 bins, zones as thirds of each lung along z, per-lung and total scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from covseg.reports.severity import RULE_TEXT, ZONES_NOTE, compute_severity, zone_score


@pytest.mark.parametrize(("percent", "score"), [
    (None, None), (0.0, 0), (0.01, 1), (4.99, 1), (5.0, 2), (25.0, 2), (25.5, 3), (49.9, 3), (50.0, 4),
    (75.0, 4), (75.01, 5), (100.0, 5),
])
def test_zone_score_bins(percent, score):
    assert zone_score(percent) == score


def _two_lungs(nz: int = 30) -> np.ndarray:
    lung = np.zeros((nz, 10, 20), np.uint8)
    lung[:, 2:8, 1:9] = 1      # right lung: image left half (x small = patient right)
    lung[:, 2:8, 11:19] = 2    # left lung
    return lung


def test_zones_are_thirds_with_upper_at_high_z():
    lung = _two_lungs(30)
    inf = np.zeros_like(lung)
    inf[20:30, 2:8, 1:9] = 1                 # whole upper third of the right lung
    inf[0:10, 2:4, 11:19] = 1                # a third of the lower third of the left lung (2 of 6 rows)
    rep = compute_severity(lung, inf)
    by = {(z.lung, z.zone): z for z in rep.zones}
    assert by["right", "upper"].slices == (20, 30)
    assert by["right", "lower"].slices == (0, 10)
    assert by["right", "upper"].percent == 100.0 and by["right", "upper"].score == 5
    assert by["right", "middle"].score == 0 and by["right", "lower"].score == 0
    assert by["left", "lower"].percent == pytest.approx(100 * 2 / 6, abs=1e-3)
    assert by["left", "lower"].score == 3
    assert by["left", "upper"].score == 0
    lungs = {lu.lung: lu for lu in rep.lungs}
    assert lungs["right"].score == 5 and lungs["left"].score == 3
    assert lungs["right"].percent == pytest.approx(100 / 3, abs=1e-3)
    assert rep.total_score == 8 and rep.max_score == 30


def test_thirds_follow_each_lungs_own_extent():
    lung = np.zeros((40, 6, 12), np.uint8)
    lung[10:40, :, :6] = 1   # right lung z 10..39
    lung[0:12, :, 6:] = 2    # left lung z 0..11 (short)
    rep = compute_severity(lung, np.zeros_like(lung))
    by = {(z.lung, z.zone): z.slices for z in rep.zones}
    assert by["right", "lower"] == (10, 20) and by["right", "upper"] == (30, 40)
    assert by["left", "lower"] == (0, 4) and by["left", "upper"] == (8, 12)
    assert rep.total_score == 0


def test_infection_outside_the_lung_is_not_counted():
    lung = _two_lungs(9)
    inf = np.ones_like(lung)  # everything, including background
    rep = compute_severity(lung, inf)
    assert all(z.percent == 100.0 for z in rep.zones)
    assert rep.total_score == 30
    assert sum(z.infected_voxels for z in rep.zones) == int(np.count_nonzero(lung))


def test_missing_lung_is_reported_not_scored():
    lung = _two_lungs(9)
    lung[lung == 2] = 0
    rep = compute_severity(lung, np.zeros_like(lung))
    left = [z for z in rep.zones if z.lung == "left"]
    assert all(z.score is None and z.percent is None for z in left)
    assert any("no left lung" in w for w in rep.warnings)


def test_report_carries_rule_source_and_zones_note():
    rep = compute_severity(_two_lungs(6), np.zeros((6, 10, 20), np.uint8))
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["rule"] == RULE_TEXT and "Pan" in d["source"] and "10.1148/radiol.2020200370" in d["source"]
    assert d["note"] == ZONES_NOTE and "not anatomical lobes" in ZONES_NOTE
    assert len(d["zones"]) == 6


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        compute_severity(np.zeros((2, 3, 4), np.uint8), np.zeros((2, 3, 5), np.uint8))
