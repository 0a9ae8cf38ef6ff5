"""The Semi-Inf-Net bundle: metadata verifies offline; a tiny run of its `training` id (rounds of pseudo labels,
fine-tune) writes the final weights, and `evaluate` with them writes the maps the acceptance check reads. The
shipped weights (models/model.pt) exist only once the procedure beats the supervised bundle: tests that need them
skip without them."""

from __future__ import annotations

import json
import sys
from functools import partial

import pytest
from PIL import Image
from utils import REPO, monai_bundle_run, run_ok

from covseg.synthetic.phantom import make_chest_phantom
from covseg.synthetic.phantom_nifti import write_phantom

BUNDLE = REPO / "bundles" / "semi_infnet"
CONFIGS = BUNDLE / "configs"
WEIGHTS = BUNDLE / "models" / "model.pt"
NO_WEIGHTS = "bundles/semi_infnet/models/model.pt is not shipped (added only if Semi-Inf-Net beats bundles/infnet)"
TINY = ["--train_limit", "4", "--unlabelled_limit", "4", "--per_round", "2", "--image_size", "64",
        "--batch_size", "2", "--pseudo_epochs", "1", "--pseudo_passes", "2", "--max_epochs", "1", "--val_interval", "1"]


_cmd = partial(monai_bundle_run, BUNDLE)


def _check_maps(out, semiseg_dir) -> None:
    masks = sorted((semiseg_dir / "test" / "masks").glob("*.png"))
    preds = sorted((out / "predictions").glob("*.png"))
    assert [p.name for p in preds] == [m.name for m in masks] and len(preds) == 48
    for pred, mask in zip(preds[:4], masks[:4]):
        with Image.open(pred) as p, Image.open(mask) as m:
            assert p.size == m.size and p.mode == "L"


def test_labelling_writes_teacher_labels_the_jcs_segmenter_reads(semiseg_dir, tmp_path):
    run = tmp_path / "run"
    labels = run / "pseudo_labels"
    run_ok(_cmd("labelling", "train.yaml", "--dataset_dir", str(semiseg_dir), "--output_dir", str(run),
                "--unlabelled_limit", "3", "--image_size", "64"))
    written = sorted(labels.glob("*.png"))
    assert len(written) == 3
    for path in written:
        with Image.open(path) as img:
            assert img.mode == "L" and set(img.getdata()) <= {0, 255}
    stamps = [p.stat().st_mtime_ns for p in written]
    run_ok(_cmd("labelling", "train.yaml", "--dataset_dir", str(semiseg_dir), "--output_dir", str(run),
                "--unlabelled_limit", "3", "--image_size", "64"))
    assert [p.stat().st_mtime_ns for p in written] == stamps  # labelled slices are never predicted again
    from monai.bundle import ConfigParser
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "jcs_segmenter" / "configs" / "train.yaml"))
    parser.update({"bundle_root": str(REPO / "bundles" / "jcs_segmenter"), "dataset_dir": str(semiseg_dir),
                   "pseudo_label_dir": str(labels), "train_limit": 2})
    data = parser.get_parsed_content("train#dataset").data
    assert len(data) == 1 + 3 and all(str(labels) in d["label"] for d in data[1:])  # 2 labelled minus 1 for val


@pytest.mark.slow
def test_tiny_training_run_writes_final_weights_and_resumes_as_done(semiseg_dir, tmp_path):
    run = tmp_path / "run"
    proc = run_ok(_cmd("training", "train.yaml", "--dataset_dir", str(semiseg_dir), "--output_dir", str(run), *TINY))
    assert "round 2/4: training set 7 slices" in proc.stdout  # 3 labelled (4 minus 1 for validation) + 4 pseudo
    assert "round 4/4: training set 7 slices" in proc.stdout  # the second pass: the same slices, none relabelled
    assert "fine-tune: 3 labelled slices" in proc.stdout
    assert (run / "model_final.pt").exists() and len(list((run / "pseudo_labels").glob("*.png"))) == 4
    assert (run / "model_student.pt").exists()  # the default blend (student_weight 0.25) keeps the student beside it
    assert [f.read_text().count("\n") for f in sorted(run.glob("round_*/slices.txt"))] == [2, 2, 2, 2]
    stamp = (run / "model_final.pt").stat().st_mtime_ns
    proc = run_ok(_cmd("training", "train.yaml", "--dataset_dir", str(semiseg_dir), "--output_dir", str(run), *TINY))
    assert "training set" not in proc.stdout and (run / "model_final.pt").stat().st_mtime_ns == stamp  # done: not rerun
    out = tmp_path / "eval"
    proc = run_ok(_cmd("evaluate", "evaluate.yaml", "--dataset_dir", str(semiseg_dir), "--output_dir", str(out),
                       "--weights", str(run / "model_final.pt"), "--image_size", "64"))
    assert "Semi-Inf-Net (covseg)" in proc.stdout
    _check_maps(out, semiseg_dir)


@pytest.mark.slow
def test_shipped_weights_evaluate_to_the_paper_table(semiseg_dir, tmp_path):
    if not WEIGHTS.exists():
        pytest.skip(NO_WEIGHTS)
    proc = run_ok(_cmd("evaluate", "evaluate.yaml", "--dataset_dir", str(semiseg_dir), "--output_dir",
                       str(tmp_path)))
    assert "Semi-Inf-Net (covseg)" in proc.stdout and (tmp_path / "metrics.json").exists()
    _check_maps(tmp_path, semiseg_dir)
    figures = json.loads((tmp_path / "metrics.json").read_text())
    for key, value in RECORDED.items():
        assert figures[key] == pytest.approx(value, abs=0.005), key


RECORDED = {"meanDic": 0.7228, "meanIoU": 0.5848, "Sm": 0.7797, "meanEm": 0.8798, "MAE": 0.0704}  # model card, 0.3.0


@pytest.mark.slow
def test_covseg_infer_with_the_bundle(tmp_path):
    if not WEIGHTS.exists():
        pytest.skip(NO_WEIGHTS)
    ct = write_phantom(tmp_path / "in" / "p.nii.gz", make_chest_phantom(shape=(6, 48, 48), spacing=(7.0, 7.0, 12.0),
                                                                         seed=1))["ct"]
    run_ok([sys.executable, "-m", "covseg", "infer", str(ct), "--out", str(tmp_path / "out"), "--bundle",
            str(BUNDLE), "--no-figures"])
    report = json.loads((tmp_path / "out" / "p" / "report.json").read_text())
    assert (tmp_path / "out" / "p" / "infection_mask.nii.gz").exists()
    assert "semi_infnet" in json.dumps(report)


def test_tiny_mean_teacher_run_writes_teacher_and_student(semiseg_dir, tmp_path):
    run = tmp_path / "mt"
    proc = run_ok(_cmd("mean_teacher", "train.yaml", "--dataset_dir", str(semiseg_dir), "--output_dir", str(run),
                       "--train_limit", "4", "--unlabelled_limit", "4", "--image_size", "64", "--mt_epochs", "1",
                       "--mt_samples_per_epoch", "4", "--mt_batch_size", "2"))
    assert "student_val_dice" in proc.stdout
    assert {p.name for p in run.glob("model_*.pt")} == {"model_final.pt", "model_best.pt", "model_student.pt"}
