"""``covseg slices``: labelled CT volumes cut into a COVID-SemiSeg-layout dataset the bundles train on."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
from utils import bundle_cmd, run_ok

from covseg.cli.main import main
from covseg.engines.training.export_slices import STAGING_PREFIX
from covseg.io.labels import label_for
from covseg.io.read import read_volume
from covseg.io.slices import read_grey, semiseg_items, split_train_val
from covseg.synthetic.phantom import make_chest_phantom
from covseg.transforms.crop import DEFAULT_MARGIN_MM, crop_to_box, lung_box, margin_px
from covseg.transforms.intensity import window_hu
from covseg.transforms.lung import lung_mask


@pytest.fixture
def labelled_scans(tmp_path):
    """Three phantoms named as nnU-Net names its images (``<case>_0000``), labels ``<case>.nii.gz``."""
    scans, labels = tmp_path / "scans", tmp_path / "labels"
    scans.mkdir()
    labels.mkdir()
    phantoms = {}
    for seed, case in enumerate(("caseA", "caseB", "caseC")):
        ph = make_chest_phantom(shape=(12, 96, 96), spacing=(3.7, 3.7, 5.0), seed=seed + 3)
        sitk.WriteImage(ph.image(), str(scans / f"{case}_0000.nii.gz"), True)
        sitk.WriteImage(ph.image(ph.infection * 2), str(labels / f"{case}.nii.gz"), True)  # infection = value 2
        phantoms[f"{case}_0000"] = ph
    return scans, labels, phantoms


def test_nnunet_channel_suffix_and_naming_tag_find_their_label(tmp_path):
    (tmp_path / "case.nii.gz").write_bytes(b"x")
    assert label_for(tmp_path, "case_0000") == tmp_path / "case.nii.gz"
    assert label_for(tmp_path, "case_0000_1a2b3c4d") == tmp_path / "case.nii.gz"
    assert label_for(tmp_path, "case_0001") is None


def test_slices_are_the_crops_covseg_infer_feeds_the_network(labelled_scans, tmp_path, capsys):
    scans, labels, phantoms = labelled_scans
    out = tmp_path / "dataset"
    assert main(["slices", str(scans), "--labels", str(labels), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 volume(s)" in printed and "caseB_0000:" in printed
    with (out / "slices-train.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["volume"] for row in rows} == set(phantoms)
    for name in ("caseA_0000", "caseC_0000"):
        volume = read_volume(scans / f"{name}.nii.gz")
        lung = lung_mask(volume.array, volume.spacing)
        infection = np.asarray(phantoms[name].infection, bool)
        mine = [row for row in rows if row["volume"] == name]
        positives = [z for z in range(len(lung)) if lung[z].any()
                     and crop_to_box(infection[z], lung_box(lung[z], margin_px(volume.spacing))).any()]
        assert sum(int(row["infection_pixels"]) > 0 for row in mine) == len(positives) > 0
        assert len(mine) >= len(positives) + 2  # plus lung slices without infection
        for row in mine:
            z = int(row["z"])
            box = lung_box(lung[z], margin_px(volume.spacing, DEFAULT_MARGIN_MM))
            image = read_grey(out / "train/labeled/images" / row["file"])
            mask = read_grey(out / "train/labeled/masks" / row["file"])
            assert row["file"] == f"{name}.z{z:04d}.png"
            np.testing.assert_allclose(image, window_hu(crop_to_box(volume.array[z], box)), atol=0.5 / 255 + 1e-6)
            np.testing.assert_array_equal(mask > 0.5, crop_to_box(infection[z], box))
    items = semiseg_items(out)  # the bundles' reader takes the dataset as it is
    train, val = split_train_val(items, 5, 0)
    held = {item["name"].split(".z")[0] for item in val}
    assert len(held) == 1 and not held & {item["name"].split(".z")[0] for item in train}  # whole volumes held out


def test_a_bad_input_is_one_line_and_the_batch_goes_on(labelled_scans, tmp_path, capsys):
    scans, labels, _ = labelled_scans
    (scans / "orphan.nii.gz").write_bytes((scans / "caseA_0000.nii.gz").read_bytes())  # no label
    broken = scans / "broken.nii.gz"
    broken.write_bytes((scans / "caseB_0000.nii.gz").read_bytes()[:300])
    (labels / "broken.nii.gz").write_bytes((labels / "caseB.nii.gz").read_bytes())
    out = tmp_path / "dataset"
    (out / f"{STAGING_PREFIX}train-caseA_0000" / "images").mkdir(parents=True)  # left by a killed run
    assert main(["slices", str(scans), "--labels", str(labels), "--out", str(out), "--label-values", "2"]) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    assert any("no label for volume 'orphan'" in line for line in errors)
    assert any("broken.nii.gz" in line and "truncated" in line for line in errors)
    assert "3 volume(s)" in captured.out and "removed" in captured.out
    assert not list(out.glob(f"{STAGING_PREFIX}*"))
    exported = {p.name.split(".z")[0] for p in (out / "train/labeled/images").glob("*.png")}
    assert exported == {"caseA_0000", "caseB_0000", "caseC_0000"}
    assert main(["slices", str(scans), "--labels", str(labels), "--out", str(out), "--label-values", "1"]) == 1
    masks = [read_grey(p) for p in (out / "train/labeled/masks").glob("*.png")]
    assert masks and not any(m.any() for m in masks)  # value 1 is nowhere: every mask empty, none left from before


def test_usage_errors_come_before_any_output(labelled_scans, tmp_path, capsys):
    scans, labels, _ = labelled_scans
    out = tmp_path / "dataset"
    for extra, words in ((["--label-values", "x"], "argument --label-values: give positive integers"),
                         (["--negatives-per-positive", "nan"], "--negatives-per-positive must be"),
                         (["--multiclass", "1,1"], "argument --label-classes/--multiclass: give 2 different values"),
                         (["--label-classes", "1"], "argument --label-classes/--multiclass: give 2 different values")):
        assert main(["slices", str(scans), "--labels", str(labels), "--out", str(out), *extra]) == 2
        assert words in capsys.readouterr().err
    assert main(["slices", str(scans), "--labels", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "labels folder not found" in capsys.readouterr().err
    assert not out.exists()


def test_the_infnet_bundle_trains_and_evaluates_on_exported_volumes(labelled_scans, tmp_path):
    scans, labels, _ = labelled_scans
    data = tmp_path / "dataset"
    assert main(["slices", str(scans), "--labels", str(labels), "--out", str(data)]) == 0
    assert main(["slices", str(scans / "caseC_0000.nii.gz"), "--labels", str(labels), "--out", str(data),
                 "--split", "test", "--all-slices"]) == 0
    run = tmp_path / "run"
    run_ok(bundle_cmd("training", "train.yaml", "--dataset_dir", str(data), "--output_dir", str(run),
                      "--max_epochs", "1", "--image_size", "32", "--batch_size", "8"))
    assert (run / "model_final.pt").is_file() and json.loads((run / "best.json").read_text())["epoch"] == 1
    evaluated = tmp_path / "eval"
    run_ok(bundle_cmd("evaluate", "evaluate.yaml", "--dataset_dir", str(data), "--output_dir", str(evaluated),
                      "--weights", str(run / "model_final.pt"), "--image_size", "32"))
    names = sorted(p.name for p in (data / "test/images").glob("*.png"))
    assert sorted(p.name for p in (evaluated / "predictions").glob("*.png")) == names


def test_class_labels_give_the_multiclass_bundles_masks(labelled_scans, tmp_path):
    scans, _, phantoms = labelled_scans
    labels = tmp_path / "class-labels"
    labels.mkdir()
    for name, ph in phantoms.items():
        sitk.WriteImage(ph.image(ph.lesion_classes), str(labels / f"{name.removesuffix('_0000')}.nii.gz"), True)
    out = tmp_path / "dataset"
    assert main(["slices", str(scans / "caseB_0000.nii.gz"), "--labels", str(labels), "--out", str(out),
                 "--label-classes", "1,2"]) == 0
    volume = read_volume(scans / "caseB_0000.nii.gz")
    lung = lung_mask(volume.array, volume.spacing)
    classes = np.asarray(phantoms["caseB_0000"].lesion_classes)
    items = {item["name"]: item for item in semiseg_items(out, labels="multiclass")}
    binary = {item["name"]: item for item in semiseg_items(out)}
    assert len(items) == len(binary) > 0
    seen = set()
    for name, item in items.items():
        z = int(name.split(".z")[1])
        want = crop_to_box(classes[z], lung_box(lung[z], margin_px(volume.spacing)))
        np.testing.assert_array_equal(item["label"][0], want)
        np.testing.assert_array_equal(binary[name]["label"][0] > 0.5, want > 0)
        for value, folder in ((1, "masks-ggo"), (2, "masks-consolidation")):
            written = read_grey(out / "train/labeled" / folder / f"{name}.png")
            np.testing.assert_array_equal(written > 0.5, want == value)
        seen |= set(np.unique(want).tolist())
    assert seen == {0, 1, 2}
    assert main(["slices", str(scans / "caseB_0000.nii.gz"), "--labels", str(labels), "--out", str(out)]) == 0
    assert not list((out / "train/labeled/masks-multiclass").glob("*.png"))  # the earlier class masks went with it


def test_a_real_dicom_series_and_its_nifti_label_line_up(ct_volumes_dir, tmp_path):
    """chest-cip64's DICOM series with its lung label (1 right, 2 left; stored as NIfTI) as the "infection": every
    lung slice is exported, the right lung lies on the image's left (radiological view, as covseg infer shows it)
    and covers dark lung, not soft tissue."""
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "dicom.nii.gz").write_bytes((ct_volumes_dir / "chest-cip64" / "lung_mask_R1_L2.nii.gz").read_bytes())
    out = tmp_path / "dataset"
    assert main(["slices", str(ct_volumes_dir / "chest-cip64" / "dicom"), "--labels", str(labels), "--out", str(out),
                 "--label-values", "1", "--all-slices"]) == 0
    files = sorted((out / "train/labeled/masks").glob("dicom.z*.png"))
    assert len(files) > 50
    inside = []
    for file in files:
        mask = read_grey(file) > 0.5
        image = read_grey(out / "train/labeled/images" / file.name)
        if mask.sum() > 50:
            assert mask[:, mask.shape[1] // 2:].sum() < 0.02 * mask.sum()
            assert image[mask].mean() < image[~mask].mean() - 0.1
            inside.append(image[mask].mean())
    assert len(inside) > 40 and np.mean(inside) < 0.25  # aerated lung in the SemiSeg window
