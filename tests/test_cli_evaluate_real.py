"""``covseg evaluate`` on the authors' own Inf-Net maps prints the paper's figures (within 0.005)."""

from __future__ import annotations

import json

from utils import PUBLISHED_INFNET

from covseg.cli.main import main

PAPER = ("meanDic", "meanSen", "meanSpe", "Sm", "meanEm", "MAE")


def test_evaluate_reference_maps_json_and_table(semiseg_dir, capsys):
    preds = semiseg_dir / "reference" / "infnet-test-predictions"
    masks = semiseg_dir / "test" / "masks"
    assert main(["evaluate", str(preds), str(masks), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    for key in PAPER:
        assert abs(figures[key] - PUBLISHED_INFNET[key]) <= 0.005, (key, figures[key], PUBLISHED_INFNET[key])
    for key in ("adpDice", "maxDic", "adpEm", "maxEm"):
        assert key in figures
    assert main(["evaluate", str(preds), str(masks)]) == 0
    table = capsys.readouterr().out
    assert "Dice" in table and "S-alpha" in table and "0.682" in table
