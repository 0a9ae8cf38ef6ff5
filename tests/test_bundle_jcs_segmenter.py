"""The JCS segmenter MONAI bundle: tiny training run, evaluation PNGs, the slice inference workflow, metadata."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from utils import REPO, TINY_RUN, monai_bundle_run, run_ok

from covseg.networks.jcs import JCSSegmenter
from covseg.networks.loading import load_weights

BUNDLE = REPO / "bundles" / "jcs_segmenter"
CONFIGS = BUNDLE / "configs"


jcs_cmd = partial(monai_bundle_run, BUNDLE)


def random_weights(path: Path) -> Path:
    torch.manual_seed(0)
    torch.save(JCSSegmenter().state_dict(), path)
    return path


@pytest.mark.slow
def test_tiny_training_run_writes_checkpoint(semiseg_dir, tmp_path):
    out = tmp_path / "run"
    proc = run_ok(jcs_cmd("training", "train.yaml", "--max_epochs", "1", "--dataset_dir", str(semiseg_dir),
                          "--output_dir", str(out), *TINY_RUN))
    assert "epoch 1/1" in proc.stdout and "val_dice" in proc.stdout
    assert (out / "checkpoint_1.pt").exists() and (out / "model_best.pt").exists()
    state = torch.load(out / "checkpoint_1.pt", weights_only=False)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0)  # poly decay reaches 0 at the end
    net = load_weights(JCSSegmenter(), out / "model_final.pt")
    assert net(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)


@pytest.mark.slow
def test_evaluate_writes_48_maps_at_mask_size_and_the_table(semiseg_dir, tmp_path):
    out = tmp_path / "eval"
    proc = run_ok(jcs_cmd("evaluate", "evaluate.yaml", "--dataset_dir", str(semiseg_dir), "--output_dir", str(out),
                          "--weights", str(random_weights(tmp_path / "w.pt")), "--image_size", "64"))
    assert "Dice" in proc.stdout and "E-phi" in proc.stdout
    preds = sorted((out / "predictions").glob("*.png"))
    masks = sorted((semiseg_dir / "test" / "masks").glob("*.png"))
    assert [p.name for p in preds] == [m.name for m in masks] and len(preds) == 48
    for pred, mask in zip(preds[:5], masks[:5]):
        with Image.open(pred) as p, Image.open(mask) as m:
            assert p.size == m.size and p.mode == "L"
    figures = json.loads((out / "metrics.json").read_text())
    assert figures["n_images"] == 48 and 0.0 <= figures["meanDic"] <= 1.0


def test_inference_config_passes_monai_check_properties(tmp_path):
    from monai.bundle import ConfigWorkflow

    (tmp_path / "slices").mkdir()
    workflow = ConfigWorkflow(config_file=str(CONFIGS / "inference.yaml"), workflow_type="infer",
                              meta_file=str(CONFIGS / "metadata.json"), logging_file=False,
                              bundle_root=str(BUNDLE), dataset_dir=str(tmp_path / "slices"),
                              weights=str(random_weights(tmp_path / "w.pt")))
    workflow.initialize()
    assert workflow.check_properties() == []


@pytest.mark.slow
def test_inference_workflow_maps_match_the_slice_predictor(semiseg_dir, tmp_path):
    """MONAI's evaluator over a folder of slices writes the same maps as covseg's predictor (both fp32)."""
    from covseg.engines.evaluation.slices import predict_folder

    slices = tmp_path / "slices"
    slices.mkdir()
    for src in sorted((semiseg_dir / "test" / "images").iterdir())[:3]:
        (slices / src.name).write_bytes(src.read_bytes())
    weights = random_weights(tmp_path / "w.pt")
    out = tmp_path / "out"
    run_ok(jcs_cmd("run", "inference.yaml", "--dataset_dir", str(slices), "--output_dir", str(out),
                   "--weights", str(weights), "--image_size", "64", "--batch_size", "2"))
    reference = predict_folder(load_weights(JCSSegmenter(), weights), slices, tmp_path / "ref", image_size=64)
    assert len(reference) == 3
    for ref in reference:
        with Image.open(out / ref.name) as got, Image.open(ref) as want, Image.open(slices / f"{ref.stem}.jpg") as im:
            assert got.size == im.size
            diff = np.abs(np.asarray(got, dtype=np.int16) - np.asarray(want, dtype=np.int16))
        assert diff.max() <= 1


def test_shipped_weights_are_fp16_under_45_mb_and_load_through_the_bundle():
    from covseg.networks.loading import load_bundle

    weights = BUNDLE / "models" / "model.pt"
    assert weights.stat().st_size <= 45e6
    state = torch.load(weights, map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    model = load_bundle(BUNDLE)
    assert isinstance(model.network, JCSSegmenter) and model.image_size == 320 and model.trained
    assert model.network(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)


RECORDED = {"meanDic": 0.7176, "meanIoU": 0.5814, "Sm": 0.7637, "meanEm": 0.8587, "MAE": 0.0940}  # model card, 0.5.0


@pytest.mark.slow
def test_evaluate_reproduces_the_recorded_figures_of_the_shipped_weights(semiseg_dir, tmp_path):
    out = tmp_path / "eval"
    run_ok(jcs_cmd("evaluate", "evaluate.yaml", "--dataset_dir", str(semiseg_dir), "--output_dir", str(out)))
    figures = json.loads((out / "metrics.json").read_text())
    for key, value in RECORDED.items():
        assert figures[key] == pytest.approx(value, abs=0.005), key
    assert len(list((out / "predictions").glob("*.png"))) == 48
