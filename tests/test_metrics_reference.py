"""The toolbox metrics reproduce the published figures on the authors' own Inf-Net test maps."""

from __future__ import annotations

import pytest
from utils import PUBLISHED_INFNET as PUBLISHED

from covseg.metrics.folders import evaluate_folders


@pytest.mark.data
def test_reference_maps_give_the_published_figures(semiseg_dir):
    pred_dir = semiseg_dir / "reference" / "infnet-test-predictions"
    r = evaluate_folders(pred_dir, semiseg_dir / "test" / "masks")
    assert r["n_images"] == 48
    assert not any(p["resized"] for p in r["per_image"])
    off = {k: round(r[k] - v, 4) for k, v in PUBLISHED.items() if abs(r[k] - v) > 0.005}
    assert not off, f"figures off the published ones by more than 0.005: {off}"
