"""``covseg evaluate`` on folders of 3D masks: the scores ``covseg infer --labels`` gives, label values and classes,
nnU-Net's naming, one error line per volume that cannot be scored, and the usage errors of the folder's kind."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
from utils import dice, use_tiny_default_model

from covseg.cli.main import main
from covseg.reports.label_scores import METRIC_KEYS
from covseg.synthetic.phantom import make_chest_phantom
from covseg.synthetic.phantom_nifti import write_phantom

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHAPE, SPACING = (12, 64, 64), (5.6, 5.6, 10.0)
WITHOUT_MAE = [k for k in METRIC_KEYS if k != "mae"]


@pytest.fixture
def tiny_model(monkeypatch):
    """Make the CLI's default model a tiny untrained U-Net at 32x32."""
    return use_tiny_default_model(monkeypatch)


@pytest.fixture(scope="module")
def phantoms():
    return [make_chest_phantom(shape=SHAPE, spacing=SPACING, seed=seed) for seed in (2, 3)]


def _write(ph, array, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(ph.image(np.asarray(array, np.uint8)), str(path))


def _lungs_and_infection(ph) -> np.ndarray:
    """COVID-19-CT-Seg's layout: 1, 2 the lungs, 3 the infection."""
    return np.where(ph.infection > 0, 3, ph.lung_labels).astype(np.uint8)


def _evaluate_json(capsys, *args: str) -> tuple[int, dict, list[str]]:
    capsys.readouterr()
    code = main(["evaluate", *args, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err.strip().splitlines()


def test_scores_of_covseg_infer_output_equal_its_report(tmp_path, phantoms, tiny_model, capsys):
    """covseg infer on nnU-Net-named inputs (``case_0000``) with ``--labels`` in the lungs + infection layout and
    ``--label-values 3``; evaluate on its output folder against the same labels gives report.json's Dice, Sen.,
    Spec., Prec. and IoU exactly, and MAE as the mask's share of wrong voxels (report.json's MAE is that of the
    probability map); the scores over volumes are summary.json's for those metrics."""
    inputs, labels, out = tmp_path / "imagesTs", tmp_path / "labelsTs", tmp_path / "out"
    for k, ph in enumerate(phantoms):
        write_phantom(inputs / f"case{k}_0000.nii.gz", ph)
        for extra in ("lung_labels", "infection", "lesion_classes"):
            (inputs / f"case{k}_0000_{extra}.nii.gz").unlink()
        _write(ph, _lungs_and_infection(ph), labels / f"case{k}.nii.gz")
    assert main(["infer", str(inputs), "--out", str(out), "--labels", str(labels), "--label-values", "3",
                 "--no-figures", "--no-progress"]) == 0
    code, result, err = _evaluate_json(capsys, str(out), str(labels), "--label-values", "3")
    assert code == 0 and err == [], err
    assert [v["name"] for v in result["volumes"]] == ["case0_0000", "case1_0000"]
    for k, entry in enumerate(result["volumes"]):
        report = json.loads((out / f"case{k}_0000" / "report.json").read_text())
        assert entry["label"] == str(labels / f"case{k}.nii.gz") and entry["label_values"] == [3]
        assert {m: entry["metrics"][m] for m in WITHOUT_MAE} == {m: report["metrics"][m] for m in WITHOUT_MAE}
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"case{k}_0000" / "infection_mask.nii.gz"))) > 0
        truth = phantoms[k].infection > 0
        assert mask.any() and entry["metrics"]["mae"] == round(float(np.mean(mask != truth)), 6)
        assert entry["metrics"]["dice"] == round(dice(mask, truth), 6)
    summary = json.loads((out / "summary.json").read_text())["scores"]
    assert result["scores"]["n"] == summary["n"] == 2
    assert {m: result["scores"]["metrics"][m] for m in WITHOUT_MAE} == {m: summary["metrics"][m] for m in WITHOUT_MAE}
    assert main(["evaluate", str(out), str(labels), "--label-values", "3"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["volume", "status", "Dice", "Sen.", "Spec.", "Prec.", "IoU", "MAE"]
    assert table[-1].startswith("mean of 2")
    assert float(table[-1].split()[3]) == pytest.approx(summary["metrics"]["dice"]["mean"], abs=5e-4)


def test_label_values_score_the_infection_alone(tmp_path, phantoms, capsys):
    """Against a lungs-1/2 + infection-3 label, ``--label-values 3`` gives the scores against the infection alone;
    without it the lungs count as infection, with a warning. A nnU-Net prediction ``<case>.nii.gz`` and one named
    ``<case>_0000.nii.gz`` both find ``<case>``'s label, whatever its extension; the CSV holds one row per volume."""
    ph = phantoms[0]
    pred, both, alone = tmp_path / "pred", tmp_path / "both", tmp_path / "alone"
    predicted = ph.infection.copy()
    predicted[:, :, :32] = 0  # half of the lesions found
    predicted[6, 30:34, 40:44] = 1  # and a false positive
    _write(ph, predicted, pred / "a.nii.gz")
    _write(ph, predicted * 2, pred / "b_0000.nii.gz")  # any non-zero value is infection
    _write(ph, predicted, pred / "c.nii.gz")
    for name, ext in (("a", ".nii.gz"), ("b", ".mha")):
        _write(ph, _lungs_and_infection(ph), both / f"{name}{ext}")
        _write(ph, ph.infection, alone / f"{name}{ext}")
    ras = write_phantom(tmp_path / "ras", ph, orientation="RAS")  # c's label: the same voxels stored in RAS
    lungs, infection = (sitk.ReadImage(str(ras[key])) for key in ("lung_labels", "infection"))
    stored = sitk.GetArrayFromImage(infection)
    assert not np.array_equal(stored, ph.infection)
    layout = sitk.GetImageFromArray(np.where(stored > 0, 3, sitk.GetArrayFromImage(lungs)).astype(np.uint8))
    layout.CopyInformation(infection)
    sitk.WriteImage(infection, str(alone / "c.nii.gz"))
    sitk.WriteImage(layout, str(both / "c.nii.gz"))
    code, reference, err = _evaluate_json(capsys, str(pred), str(alone))
    assert code == 0 and err == []
    code, given, err = _evaluate_json(capsys, str(pred), str(both), "--label-values", "3", "--csv",
                                      str(tmp_path / "scores.csv"))
    assert code == 0 and err == []
    assert [v["label"] for v in given["volumes"]] == [str(both / "a.nii.gz"), str(both / "b.mha"),
                                                      str(both / "c.nii.gz")]
    assert [v["metrics"] for v in given["volumes"]] == [v["metrics"] for v in reference["volumes"]]
    scores = given["volumes"][0]["metrics"]
    assert all(v["metrics"] == scores for v in given["volumes"])
    truth, mask = ph.infection > 0, predicted > 0
    assert scores["dice"] == round(dice(mask, truth), 6) and 0.1 < scores["dice"] < 0.9
    assert scores["precision"] < 1.0 and scores["mae"] == round(float(np.mean(mask != truth)), 6)
    assert given["scores"]["metrics"] == reference["scores"]["metrics"]
    assert given["scores"]["label_values"] == [[3]] and reference["scores"]["label_values"] == [[1]]
    code, plain, err = _evaluate_json(capsys, str(pred), str(both))
    assert code == 0 and plain["volumes"][0]["metrics"] != scores
    assert len(err) == 3 and err[0].startswith("warning: a: label holds values 1, 2, 3"), err
    with open(tmp_path / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["a", "b_0000", "c"] and {r["label_values"] for r in rows} == {"3"}
    assert float(rows[0]["dice"]) == scores["dice"]


def test_a_volume_that_cannot_be_scored_is_one_error_line(tmp_path, phantoms, capsys):
    """A label on another grid, a missing label and an unreadable prediction: one error line each naming the file
    and the reason; the other volume is scored and the batch exits 1."""
    ph = phantoms[0]
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    for name in ("good", "other_grid", "no_label"):
        _write(ph, ph.infection, pred / f"{name}.nii.gz")
    (pred / "empty.nii.gz").write_bytes(b"")
    for name in ("good", "empty"):
        _write(ph, ph.infection, gt / f"{name}.nii.gz")
    small = make_chest_phantom(shape=(10, 48, 48), spacing=SPACING, seed=2)
    _write(small, small.infection, gt / "other_grid.nii.gz")
    code, result, err = _evaluate_json(capsys, str(pred), str(gt))
    assert code == 1
    assert [(v["name"], v["status"]) for v in result["volumes"]] == [
        ("empty", "error"), ("good", "ok"), ("no_label", "error"), ("other_grid", "error")]
    assert len(err) == 3 and all(line.startswith("error: ") for line in err), err
    assert err[0].startswith(f"error: {pred / 'empty.nii.gz'}: ") and "empty" in err[0].split(": ", 2)[2]
    assert err[1].startswith(f"error: {pred / 'no_label.nii.gz'}: no label in {gt}")
    assert err[2].startswith(f"error: {gt / 'other_grid.nii.gz'}: label size (48, 48, 10) differs")
    assert result["volumes"][1]["metrics"]["dice"] == 1.0 and result["scores"]["n"] == 1
    assert main(["evaluate", str(pred), str(gt)]) == 1
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in table[2:]] == [["empty", "FAILED"], ["good", "ok"], ["no_label", "FAILED"],
                                                        ["other_grid", "FAILED"]]


def test_label_classes_score_each_class_of_a_class_map(tmp_path, phantoms, capsys):
    """``--label-classes G,C``: a covseg infer folder's ``infection_labels.nii.gz`` (or a class-map prediction
    file) scored per class against the label's G and C, infection against both."""
    ph = phantoms[1]
    classes = ph.lesion_classes.copy()
    classes[:, :, :32] = 0
    folder, files, gt = tmp_path / "out" / "case", tmp_path / "files", tmp_path / "gt"
    _write(ph, classes > 0, folder / "infection_mask.nii.gz")
    _write(ph, classes, folder / "infection_labels.nii.gz")
    _write(ph, classes, files / "case.nii.gz")
    label = np.select([ph.lesion_classes == 1, ph.lesion_classes == 2], [5, 7], ph.lung_labels.astype(np.int64))
    _write(ph, label, gt / "case.nii.gz")
    for pred in (tmp_path / "out", files):
        code, result, err = _evaluate_json(capsys, str(pred), str(gt), "--label-classes", "5,7")
        assert code == 0 and err == [], err
        entry = result["volumes"][0]
        assert entry["label_classes"] == {"ggo": 5, "consolidation": 7} and entry["label_values"] == [5, 7]
        assert entry["metrics"]["dice"] == round(dice(classes > 0, ph.infection > 0), 6)
        for k, name in ((1, "ggo"), (2, "consolidation")):
            assert entry["class_metrics"][name]["dice"] == round(dice(classes == k, ph.lesion_classes == k), 6)
        assert set(result["scores"]["classes"]) == {"ggo", "consolidation"}
    _write(ph, classes * 2, files / "case.nii.gz")  # 4: no class
    code, result, err = _evaluate_json(capsys, str(files), str(gt), "--label-classes", "5,7")
    assert code == 1 and len(err) == 1 and "prediction holds values 0, 2, 4" in err[0], err


def test_folder_kinds_and_usage_errors(tmp_path, phantoms, capsys):
    """A folder mixing 2D maps and volumes, an empty one, 2D-only or volume-only options given to the other kind, a
    missing GT_DIR: one usage line each (exit 2)."""
    ph = phantoms[0]
    pred, gt, empty = tmp_path / "pred", tmp_path / "gt", tmp_path / "empty"
    empty.mkdir()
    _write(ph, ph.infection, pred / "a.nii.gz")
    _write(ph, ph.infection, gt / "a.nii.gz")
    (pred / "summary.csv").write_text("name\n")  # covseg infer's files beside the volumes are not predictions
    cases = [([str(empty), str(gt)], f"error: {empty}: no predictions: neither 2D maps"),
             ([str(pred), str(gt), "--name", "x"], "error: --name names the 2D table row"),
             ([str(pred), str(tmp_path / "nope")], f"error: {tmp_path / 'nope'}: not a folder")]
    for args, first in cases:
        assert main(["evaluate", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(first), err
    assert main(["evaluate", str(pred), str(gt)]) == 0
    capsys.readouterr()
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(pred / "slice.png")
    assert main(["evaluate", str(pred), str(gt)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {pred}: holds both 2D prediction maps (slice.png) and volumes (a.nii.gz): give a folder "
                   "of one kind"]
    (pred / "a.nii.gz").unlink()
    assert main(["evaluate", str(pred), str(gt), "--label-values", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --label-values goes with volume predictions"), err


def test_a_probability_map_is_scored_with_a_warning(tmp_path, phantoms, capsys):
    """A prediction that is a probability map (covseg infer --save-prob's uint8 0-255, or fractions) is scored as > 0,
    which marks nearly everything: a warning says so; a 0/255 mask or a 0/1/2 class map gets none."""
    ph = phantoms[0]
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    ramp = np.linspace(0, 255, ph.infection.size).reshape(ph.infection.shape)
    _write(ph, np.round(ramp), pred / "prob.nii.gz")
    _write(ph, ph.infection * 255, pred / "mask255.nii.gz")
    _write(ph, ph.lesion_classes, pred / "classes.nii.gz")
    fractions = sitk.GetImageFromArray((ramp / 255).astype(np.float32))
    fractions.CopyInformation(ph.image(ph.infection))
    sitk.WriteImage(fractions, str(pred / "fractions.nii.gz"))
    for name in ("prob", "mask255", "classes", "fractions"):
        _write(ph, ph.infection, gt / f"{name}.nii.gz")
    code, result, err = _evaluate_json(capsys, str(pred), str(gt))
    assert code == 0
    warned = {v["name"]: v["warnings"] for v in result["volumes"]}
    assert warned["mask255"] == [] and warned["classes"] == [], warned
    assert len(warned["prob"]) == 1 and "prob.nii.gz holds 256 different values from 0 to 255" in warned["prob"][0]
    assert len(warned["fractions"]) == 1 and "fractional values" in warned["fractions"][0]
    assert any(line.startswith("warning: prob: prob.nii.gz holds 256") for line in err), err


def test_gt_dir_that_is_pred_dir_is_a_usage_error(tmp_path, phantoms, capsys):
    """GT_DIR == PRED_DIR (by the same path or a link to it) scored every prediction against itself (Dice 1.000):
    one usage line (exit 2), for volumes and for 2D maps."""
    ph = phantoms[0]
    volumes, maps = tmp_path / "volumes", tmp_path / "maps"
    _write(ph, ph.infection, volumes / "a.nii.gz")
    maps.mkdir()
    from PIL import Image

    Image.fromarray((ph.infection[6] * 255).astype(np.uint8)).save(maps / "a.png")
    (tmp_path / "link").symlink_to(volumes)
    for pred, gt in ((volumes, volumes), (volumes, tmp_path / "link"), (maps, maps)):
        assert main(["evaluate", str(pred), str(gt)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: {gt}: is PRED_DIR itself: each prediction would be scored against itself (give the "
                       "folder of reference masks)"], err
