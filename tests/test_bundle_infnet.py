"""The Inf-Net MONAI bundle: tiny training runs (plain, resumed, torchrun/gloo), evaluation, metadata."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from utils import INFNET_BUNDLE, INFNET_TRAIN, TINY_RUN, assert_masks_agree, bundle_cmd, require, run_ok

from covseg.networks.infnet import InfNet
from covseg.networks.loading import load_weights


@pytest.mark.slow
def test_tiny_training_run_writes_checkpoint_and_resumes(semiseg_dir, tmp_path):
    out = tmp_path / "run"
    common = ["--dataset_dir", str(semiseg_dir), "--output_dir", str(out), *TINY_RUN]
    first = run_ok(bundle_cmd("training", INFNET_TRAIN, "--max_epochs", "1", "--snapshot_start", "1", *common))
    assert "epoch 1/1" in first.stdout
    assert (out / "checkpoint_1.pt").exists() and (out / "snapshot_1.pt").exists()
    swa, final = (torch.load(out / f, weights_only=True) for f in ("model_swa.pt", "model_final.pt"))
    assert all(torch.equal(swa[k], final[k]) for k in final)  # one snapshot: its average is itself
    net = load_weights(InfNet(), out / "model_final.pt")
    assert net(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)

    second = run_ok(bundle_cmd("training", INFNET_TRAIN, "--max_epochs", "2", *common))
    assert "epoch 2/2" in second.stdout and "epoch 1/2" not in second.stdout  # resumed, not restarted
    assert (out / "checkpoint_2.pt").exists()
    assert json.loads((out / "best.json").read_text())["epoch"] in (1, 2)


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu_with_gloo(semiseg_dir, tmp_path):
    out = tmp_path / "ddp"
    configs = str([INFNET_TRAIN, str(INFNET_BUNDLE / "configs" / "multi_gpu_train.yaml")])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd = torchrun + bundle_cmd("training", configs, "--max_epochs", "1", "--dataset_dir", str(semiseg_dir),
                             "--output_dir", str(out), *TINY_RUN)[1:]
    proc = run_ok(cmd)
    assert "epoch 1/1" in proc.stdout
    state = torch.load(out / "model_final.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state)  # DDP wrapper removed before saving
    load_weights(InfNet(), out / "model_final.pt")


@pytest.mark.slow
def test_evaluate_config_writes_predictions_and_table(semiseg_dir, tmp_path):
    weights = tmp_path / "w.pt"
    torch.manual_seed(0)
    torch.save(InfNet().state_dict(), weights)
    out = tmp_path / "eval"
    proc = run_ok(bundle_cmd("evaluate", "evaluate.yaml", "--dataset_dir", str(semiseg_dir),
                        "--output_dir", str(out), "--weights", str(weights), "--image_size", "64"))
    assert "Dice" in proc.stdout and "S-alpha" in proc.stdout
    preds = sorted((out / "predictions").glob("*.png"))
    masks = sorted((semiseg_dir / "test" / "masks").glob("*.png"))
    assert [p.name for p in preds] == [m.name for m in masks]
    from PIL import Image

    for pred, mask in zip(preds[:5], masks[:5]):
        assert Image.open(pred).size == Image.open(mask).size
    figures = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= figures["meanDic"] <= 1.0 and figures["n_images"] == 48
    assert len((out / "per_image.csv").read_text().splitlines()) == 49


@pytest.mark.slow
def test_inference_config_same_masks_with_onnxruntime(tmp_path):
    """The shipped weights through inference.yaml with each backend: the same infection masks."""
    require("onnxruntime", reason="the onnx extra is not installed (pip install 'covseg[onnx]')")
    import nibabel as nib
    import numpy as np

    from covseg.synthetic.phantom import make_chest_phantom
    from covseg.synthetic.phantom_nifti import write_phantom

    ct = write_phantom(tmp_path / "in" / "case.nii.gz",
                       make_chest_phantom(shape=(6, 96, 96), spacing=(3.5, 3.5, 10.0), seed=3))["ct"]
    masks = {}
    # like with like: ONNX Runtime runs fp32, so torch is forced to fp32 too; then torch bf16 with a stated tolerance.
    # The default backend, auto, runs ONNX Runtime for fp32 and leaves bf16 to torch.
    for run, backend, precision, ran in (("torch", "torch", "fp32", "torch"),
                                         ("onnxruntime", "onnxruntime", "fp32", "onnxruntime"),
                                         ("auto-fp32", "auto", "fp32", "onnxruntime"),
                                         ("torch-bf16", "auto", "bf16", "torch")):
        out = tmp_path / run
        run_ok(bundle_cmd("inference", str(INFNET_BUNDLE / "configs" / "inference.yaml"), "--input_dir", str(ct),
                          "--output_dir", str(out), "--backend", backend),
               env_extra={"COVSEG_CACHE": str(tmp_path / "cache"), "COVSEG_PRECISION": precision})
        report = json.loads((out / "case" / "report.json").read_text())
        assert report["model"]["backend"] == ran and report["model"]["trained"] is True
        assert report["model"]["precision"] == precision
        masks[run] = np.asarray(nib.load(out / "case" / "infection_mask.nii.gz").dataobj)
    assert masks["torch"].any()
    np.testing.assert_array_equal(masks["torch"], masks["onnxruntime"])
    np.testing.assert_array_equal(masks["auto-fp32"], masks["onnxruntime"])
    assert_masks_agree(masks["torch-bf16"], masks["torch"], max_flip_fraction=1e-3)


def test_bundle_inference_run_reports_a_failed_volume_and_exits_non_zero(tmp_path):
    """``python -m monai.bundle run inference`` with one good and one damaged input: an ``error:`` line naming the
    damaged file, the good volume complete, exit status 1 (it used to exit 0 with the failure only in summary.json);
    a missing ``dataset_dir`` likewise."""
    from covseg.synthetic.phantom import make_chest_phantom
    from covseg.synthetic.phantom_nifti import write_phantom

    ct = write_phantom(tmp_path / "phantom" / "good.nii.gz",
                       make_chest_phantom(shape=(6, 48, 48), spacing=(7.0, 7.0, 12.0), seed=1))["ct"]
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(ct, folder / "good.nii.gz")
    (folder / "bad.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    config = str(INFNET_BUNDLE / "configs" / "inference.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(bundle_cmd("inference", config, "--dataset_dir", str(folder), "--output_dir",
                                     str(tmp_path / "out"), "--figures", "False"),
                          capture_output=True, text=True, timeout=600, env=env)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 1, done.stderr[-2000:]
    assert any("bad.nii.gz" in line for line in errors) and "Traceback" not in done.stderr
    assert errors[-1].startswith("error: 1 of 2 volume(s) failed")
    rows = {line.split()[0]: line.split()[1] for line in done.stdout.splitlines() if line[:5] in ("good ", "bad  ")}
    assert rows == {"good": "ok", "bad": "FAILED"}, done.stdout[-2000:]  # the table covseg infer prints
    assert "1 of 2 volume(s) done in " in done.stdout and str(tmp_path / "out") in done.stdout
    assert "highdicom" not in done.stdout + done.stderr
    assert (tmp_path / "out" / "good" / "infection_mask.nii.gz").is_file()
    missing = subprocess.run(bundle_cmd("inference", config, "--dataset_dir", str(tmp_path / "nowhere"),
                                        "--output_dir", str(tmp_path / "out2")),
                             capture_output=True, text=True, timeout=600, env=env)
    assert missing.returncode == 1 and "nowhere" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.parametrize("bundle", ["infnet", "semi_infnet"])
def test_inference_names_other_weights_so_skip_done_tells_them_apart(bundle, tmp_path):
    """`run inference --weights RUN/model_final.pt`, then `--skip_done true` without it, kept the run's masks."""
    from monai.bundle import ConfigParser

    config = Path(__file__).resolve().parents[1] / "bundles" / bundle / "configs" / "inference.yaml"
    weights = tmp_path / "model_final.pt"
    weights.write_bytes(b"x")
    infos = []
    for override in ({}, {"weights": str(weights)}):
        parser = ConfigParser()
        parser.read_config(str(config))
        parser.update({"bundle_root": str(config.parents[1]), **override})
        infos.append(parser.get_parsed_content("model_info"))
    assert "weights" not in infos[0] and infos[1]["weights"].startswith(f"{weights.resolve()} (1 bytes")
    assert infos[0]["name"] == infos[1]["name"]


TINY_NETWORK = """\
covseg: {{network: tiny-unet, image_size: 32, out_channels: 1}}
network_def:
  _target_: covseg.networks.registry.get_network
  name: unet
  features: [4, 4, 8, 8, 16, 4]
weights: {weights}
image_size: 32
backend: torch
"""
"""A second config file for ``run inference``: the tiny U-Net of the tests (weights saved by the test) at 32²."""


def test_bundle_label_values_score_a_lung_and_infection_label_as_the_infection_alone(tmp_path):
    """``run inference --labels_dir`` with COVID-19-CT-Seg's layout (1, 2 lungs, 3 infection) and
    ``--label_values "[3]"``: the scores against the infection-only label, report.json and summary.json name the
    values; a bad value, or values without ``labels_dir``, is one ``error:`` line and exit status 1."""
    import numpy as np
    import SimpleITK as sitk
    from utils import tiny_unet

    from covseg.synthetic.phantom import make_chest_phantom
    from covseg.synthetic.phantom_nifti import write_phantom

    ph = make_chest_phantom(shape=(12, 64, 64), spacing=(5.6, 5.6, 10.0), seed=2)
    ct = write_phantom(tmp_path / "in" / "case.nii.gz", ph)["ct"]
    alone, both = tmp_path / "alone", tmp_path / "both"
    for folder, label in ((alone, ph.infection), (both, np.where(ph.infection > 0, 3, ph.lung_labels))):
        folder.mkdir()
        sitk.WriteImage(ph.image(label.astype(np.uint8)), str(folder / "case.nii.gz"))
    torch.save(tiny_unet().state_dict(), tmp_path / "tiny.pt")
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(TINY_NETWORK.format(weights=tmp_path / "tiny.pt"))
    configs = f"['{INFNET_BUNDLE / 'configs' / 'inference.yaml'}', '{tiny}']"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(out: str, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(bundle_cmd("inference", configs, "--dataset_dir", str(ct), "--output_dir",
                                         str(tmp_path / out), "--figures", "false", *extra),
                              capture_output=True, text=True, timeout=600, env=env)

    for out, labels, extra in (("a", alone, ()), ("c", both, ("--label_values", "[3]"))):
        done = run(out, "--labels_dir", str(labels), *extra)
        assert done.returncode == 0, done.stderr[-3000:]
    reference, given = (json.loads((tmp_path / out / "case" / "report.json").read_text()) for out in "ac")
    assert reference["model"]["name"] == given["model"]["name"] == "tiny-unet"  # the tiny network ran
    assert given["metrics"] == reference["metrics"] and given["label_values"] == [3]
    assert not [w for w in given["warnings"] if "label" in w]
    summaries = [json.loads((tmp_path / out / "summary.json").read_text()) for out in "ac"]
    assert summaries[0]["label_values"] is None
    assert summaries[1]["label_values"] == {"infection": [3], "classes": None}
    for extra, says in ((("--labels_dir", str(both), "--label_values", "[0]"), "label_values: give positive"),
                        (("--label_values", "[3]"), "label values label_values [3] go with labels_dir")):
        done = run("bad", *extra)
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
        assert len(errors) == 1 and says in errors[0], done.stderr[-3000:]
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("bundle", ["infnet", "semi_infnet"])
def test_inference_config_label_values_reach_the_evaluator(bundle):
    """Each inference config's ``label_values`` / ``label_classes`` are the evaluator's ``label_values``."""
    from monai.bundle import ConfigParser

    from covseg.reports.label_scores import LabelValues

    config = Path(__file__).resolve().parents[1] / "bundles" / bundle / "configs" / "inference.yaml"
    found = []
    for override in ({}, {"label_values": [3]}, {"label_values": 3}, {"label_classes": [4, 5]}):
        parser = ConfigParser()
        parser.read_config(str(config))
        parser.update(override)
        found.append(parser.get_parsed_content("evaluator#label_values"))
    assert found == [None, LabelValues((3,)), LabelValues((3,)), LabelValues(classes=(4, 5))]


@pytest.mark.parametrize(("values", "classes", "says"), [
    ("three", None, "label_values: give positive integers as a list, e.g. --label_values \"[3]\""),
    ([3, 2.5], None, "label_values: give positive"), ([], None, "label_values: give positive"),
    ([True], None, "label_values: give positive"), ([65536], None, "label_values: give positive"),
    (None, [1, 1], "label_classes: give 2 different values"), (None, [1, 2, 3], "label_classes: give 2 different"),
    (None, [0, 1], "label_classes: give positive"), ([3], [1, 2], "give label_values or label_classes, not both")])
def test_bad_label_values_of_a_config_are_one_line(values, classes, says):
    from covseg.reports.label_scores import LabelValues

    with pytest.raises(ValueError) as caught:
        LabelValues.from_config(values, classes)
    assert str(caught.value).startswith(says) and "\n" not in str(caught.value)
