"""scripts/train_long.py: the bundle's training run on CUDA or CPU with its wall time and device recorded."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from utils import REPO, run_ok

SCRIPT = REPO / "scripts" / "train_long.py"


def _script():
    spec = importlib.util.spec_from_file_location("train_long", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_overrides_are_yaml_values_over_the_paper_schedule(tmp_path):
    script = _script()
    args, overrides = script.parse(["--output_dir", str(tmp_path), "--paper-schedule", "--per_round", "2",
                                    "--label_dir", "null", "--tta", "true"])
    assert args.output_dir == tmp_path and args.config == script.SEMI_TRAIN
    assert overrides == {**script.PAPER_SCHEDULE, "per_round": 2, "label_dir": None, "tta": True}
    with pytest.raises(SystemExit):
        script.parse(["--output_dir", str(tmp_path), "--per_round"])


def test_help_is_the_whole_first_paragraph_and_names_the_overrides(capsys):
    """--help cut its description after "else on the CPU," and did not say it takes --KEY VALUE overrides, which
    docs/reproduce.md passes (docs walk, 2026-12-07)."""
    with pytest.raises(SystemExit):
        _script().parse(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "train_long.json" in out and "--KEY VALUE" in out


@pytest.mark.slow
def test_tiny_paper_schedule_run_records_device_and_wall_time(semiseg_dir, tmp_path):
    run = tmp_path / "run"
    proc = run_ok([sys.executable, str(SCRIPT), "--output_dir", str(run), "--paper-schedule", "--device", "cpu",
                   "--dataset_dir", str(semiseg_dir), "--train_limit", "4", "--unlabelled_limit", "7",
                   "--samples_per_round", "2", "--image_size", "64", "--batch_size", "2", "--max_epochs", "1",
                   "--val_interval", "1"])
    assert "round 2/2: training set 10 slices" in proc.stdout  # K = 5: 5 + 2 pool slices
    assert (run / "model_final.pt").exists()
    assert [p.parent.name for p in run.glob("round_*/model_final.pt")] == ["round_002"]  # only the newest kept
    (entry,) = json.loads((run / "train_long.json").read_text())
    assert entry["device"] == "cpu" and entry["finished"] and entry["wall_s"] > 0
    assert entry["overrides"]["per_round"] == 5 and entry["precision"] in ("bf16", "fp32")
