"""The toolbox metrics reproduce the published figures on the authors' own Inf-Net test maps."""

from __future__ import annotations

import pytest

from covseg.metrics.folders import evaluate_folders

# README of COVID-SemiSeg: the authors' toolbox on reference/infnet-test-predictions
PUBLISHED = {
    "meanDic": 0.682, "meanSen": 0.692, "meanSpe": 0.943, "Sm": 0.781, "meanEm": 0.838, "MAE": 0.082,
    "adpDice": 0.727, "adpEm": 0.885, "adpIoU": 0.571, "adpPre": 0.689, "adpSen": 0.808, "adpSpe": 0.953,
    "maxDic": 0.746, "maxEm": 0.916,
}


@pytest.mark.data
def test_reference_maps_give_the_published_figures(semiseg_dir):
    pred_dir = semiseg_dir / "reference" / "infnet-test-predictions"
    r = evaluate_folders(pred_dir, semiseg_dir / "test" / "masks")
    assert r["n_images"] == 48
    assert not any(p["resized"] for p in r["per_image"])
    off = {k: round(r[k] - v, 4) for k, v in PUBLISHED.items() if abs(r[k] - v) > 0.005}
    assert not off, f"figures off the published ones by more than 0.005: {off}"
