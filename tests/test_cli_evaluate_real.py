"""``covseg evaluate`` on the authors' own Inf-Net maps prints the paper's figures (within 0.005)."""

from __future__ import annotations

import json

from covseg.cli.main import main

PUBLISHED = {"meanDic": 0.682, "meanSen": 0.692, "meanSpe": 0.943, "Sm": 0.781, "meanEm": 0.838, "MAE": 0.082}


def test_evaluate_reference_maps_json_and_table(semiseg_dir, capsys):
    preds = semiseg_dir / "reference" / "infnet-test-predictions"
    masks = semiseg_dir / "test" / "masks"
    assert main(["evaluate", str(preds), str(masks), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    for key, value in PUBLISHED.items():
        assert abs(figures[key] - value) <= 0.005, (key, figures[key], value)
    for key in ("adpDice", "maxDic", "adpEm", "maxEm"):
        assert key in figures
    assert main(["evaluate", str(preds), str(masks)]) == 0
    table = capsys.readouterr().out
    assert "Dice" in table and "S-alpha" in table and "0.682" in table
