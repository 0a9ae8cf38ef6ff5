"""Joint diagnosis (``covseg diagnose``) and the classifier gate (``covseg infer --gate``) on the real CT volumes.

The segmenter is a tiny untrained U-Net and the classifier a fresh (untrained) one in a temporary bundle: what
is tested is the flow (decision -> segment or not, outputs, bad inputs), driven by the thresholds.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from utils import assert_masks_agree, monai_bundle_run, require, use_tiny_default_model

from covseg.cli.main import main
from covseg.engines.inference.diagnose import DiagnosisSettings, decide
from covseg.engines.inference.slice_scorer import SliceScorer
from covseg.engines.runtime import onnx_runtime
from covseg.engines.runtime.backend_model import scoring_runtime
from covseg.engines.runtime.onnx_runtime import onnx_runtime_network
from covseg.networks.classifier import SliceClassifier
from covseg.networks.loading import load_bundle

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def tiny_segmenter(monkeypatch, one_torch_thread):
    use_tiny_default_model(monkeypatch)


@pytest.fixture(scope="module")
def classifier_bundle(tmp_path_factory) -> Path:
    """The jcs_classifier bundle's configs with fresh weights (fp16, as shipped)."""
    root = tmp_path_factory.mktemp("cls") / "jcs_classifier"
    shutil.copytree(REPO / "bundles" / "jcs_classifier" / "configs", root / "configs")
    (root / "models").mkdir()
    torch.manual_seed(0)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in SliceClassifier().state_dict().items()},
               root / "models" / "model.pt")
    return root


def test_decision_rule_counts_slices_above_the_fraction():
    s = DiagnosisSettings(slice_threshold=0.5, patient_threshold=0.2)
    assert decide([0.9, 0.8, 0.1, 0.2, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1], s)["positive"] is False  # 2 > 2.0: no
    d = decide([0.9, 0.8, 0.7, 0.2, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1], s)
    assert d["positive"] is True and d["positive_slices"] == 3 and d["patient_threshold_slices"] == 2.0
    assert decide([], s)["positive"] is False
    d = decide([0.9, 0.1], s, lung_slices=5)
    assert d["classified_slices"] == 2 and d["lung_slices"] == 5 and d["patient_threshold_slices"] == 0.4


def test_montage_title_states_the_decision():
    from covseg.reports.diagnosis import montage_title

    s = DiagnosisSettings(slice_threshold=0.5, patient_threshold=0.5)
    d = {**decide([0.9, 0.8, 0.1, 0.2], s), "settings": {}}
    assert montage_title("ct", d, 2) == ("ct: NEGATIVE, 2 of 4 classified slices >= 0.50 (positive when more than 2); "
                                          "the 2 highest-scoring slices")
    d = {**decide([0.9, 0.8, 0.7, 0.2], s), "settings": {}, "montage_min_gap": 10}
    assert montage_title("ct", d, 4).startswith("ct: POSITIVE, 3 of 4 classified")
    assert montage_title("ct", d, 4).endswith("the 4 highest-scoring slices at least 10 apart")
    d = {**decide([0.9], s, largest_lung_cm2=96.6), "settings": {}}
    assert montage_title("ct", d, 1).startswith("ct: INDETERMINATE (largest lung cross-section 96.6 cm²), 1 of 1")
    d = {**decide([], s, largest_lung_cm2=0.0), "settings": {}}  # a volume without lung: not "the 0 slices"
    assert montage_title("water", d, 0) == "water: INDETERMINATE (no lung found)"


def test_spaced_top_keeps_the_strongest_slice_of_each_part():
    from covseg.reports.picks import spaced_top

    z = [10, 11, 12, 13, 30, 31, 50]
    score = [0.9, 0.95, 0.97, 0.8, 0.6, 0.7, 0.1]
    assert spaced_top(z, score, 3, gap=5) == [12, 31, 50]  # 11 and 10 lie within 5 of 12
    assert spaced_top(z, score, 3, gap=1) == [12, 11, 10]  # no spacing: simply the highest
    assert spaced_top(z, score, 10, gap=25) == [12, 50]  # fewer than asked when the volume is short


def test_only_slices_with_enough_lung_are_classified():
    from covseg.engines.inference.diagnose import classified_slices

    crops = [np.zeros((4, 5)), np.zeros((20, 30)), np.zeros((16, 20)), np.zeros((10, 10)), np.zeros((2, 3))]
    assert classified_slices(crops, 0.25) == [1, 2]  # 20 px, 100 px and 6 px are below 0.25 x 600 px
    assert classified_slices(crops, 0.0) == [0, 1, 2, 3, 4]
    assert classified_slices([], 0.25) == []


ALWAYS_POSITIVE = ("--slice-threshold", "0", "--patient-threshold", "0")
"""Every classified slice positive, so every patient with one (the thresholds' lower ends)."""


def _diagnose(ct_volumes_dir: Path, bundle: Path, out: Path, *extra: str) -> int:
    inputs = [str(ct_volumes_dir / "chest-2slice" / "ct.nii.gz"), str(out.parent / "broken.nii.gz"),
              str(ct_volumes_dir / "chest-cip64" / "ct.nii.gz")]
    (out.parent / "broken.nii.gz").write_bytes(b"not a volume")
    return main(["diagnose", *inputs, "--out", str(out), "--classifier", str(bundle), "--no-progress", *extra])


def test_diagnose_negative_patients_are_not_segmented_and_bad_input_is_one_line(ct_volumes_dir, classifier_bundle,
                                                                               tmp_path, capsys, monkeypatch):
    import covseg.engines.inference.dataset as dataset

    forked = []  # the first volume is read in a forked child while the models load, as in covseg infer
    real_fork = dataset.fork_child
    monkeypatch.setattr(dataset, "fork_child", lambda transform, source: forked.append(
        (Path(source.path).parent.name, real_fork(transform, source))) or forked[-1][1])
    out = tmp_path / "neg"
    code = _diagnose(ct_volumes_dir, classifier_bundle, out, "--patient-threshold", "1.0")  # never positive
    err = capsys.readouterr().err
    assert [name for name, _ in forked] == ["chest-2slice"] and forked[0][1] is not None
    assert code == 1  # one input failed, the others went on
    bad = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(bad) == 1 and "broken.nii.gz" in bad[0]
    assert not any(p.name.startswith("broken") for p in out.iterdir())  # nothing partial
    folders = [p for p in out.iterdir() if p.is_dir()]
    assert len(folders) == 2
    for folder in folders:
        d = json.loads((folder / "diagnosis.json").read_text())
        assert d["positive"] is False and d["segmented_slices"] == 0 and d["infection_ml"] == 0.0
        assert len(d["slices"]) == d["classified_slices"] > 0 and d["classified_slices"] <= d["lung_slices"]
        assert all(0.0 <= s["score"] <= 1.0 for s in d["slices"])
        shown, gap = d["montage_slices"], d["montage_min_gap"]  # the montage's slices: classified, kept apart
        assert 0 < len(shown) <= 6 and set(shown) <= {s["slice"] for s in d["slices"]}
        assert all(abs(a - b) >= gap for i, a in enumerate(shown) for b in shown[i + 1:])
        assert int(np.asarray(nib.load(folder / "infection_mask.nii.gz").dataobj).sum()) == 0
        assert Image.open(folder / "activation_montage.png").size[0] > 0
        report = json.loads((folder / "report.json").read_text())
        assert report["predicted_slices"] == 0 and report["outputs"]["diagnosis"] == "diagnosis.json"
        assert report["model"]["classifier"]["name"] == "jcs_classifier"  # the report names both models
        assert not (folder / "montage.png").exists()  # nothing segmented, no infection pictures
    page = (out / "report.html").read_text()  # each decision and activation montage; no infection pictures
    assert page.count('data-diagnosis="negative"') == 2 and page.count('data-kind="activation_montage"') == 2
    assert 'id="col-diagnosis"' in page and 'data-kind="montage"' not in page and "Not segmented" in page
    assert "broken.nii.gz" in page  # the failed input keeps its row
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert sorted(r["diagnosis"] for r in rows) == ["", "negative", "negative"]  # the broken input: none


def test_diagnose_positive_patients_are_segmented(ct_volumes_dir, classifier_bundle, tmp_path, capsys):
    out = tmp_path / "pos"
    _diagnose(ct_volumes_dir, classifier_bundle, out, *ALWAYS_POSITIVE)
    assert "POSITIVE" in capsys.readouterr().out
    folders = [p for p in out.iterdir() if p.is_dir()]
    assert len(folders) == 2
    for folder in folders:
        d = json.loads((folder / "diagnosis.json").read_text())
        assert d["positive"] is True and d["segmented_slices"] == d["lung_slices"]
        pictures = ("montage.png", "reformats.png", "infection_curve.png")
        long_enough = json.loads((folder / "report.json").read_text())["n_slices"] >= 8  # chest-2slice: montage only
        assert [(folder / f).is_file() for f in pictures] == [True, long_enough, long_enough]
    page = (out / "report.html").read_text()
    assert page.count('data-diagnosis="positive"') == 2 and page.count('data-kind="montage"') == 2
    again = tmp_path / "no-figures"
    _diagnose(ct_volumes_dir, classifier_bundle, again, *ALWAYS_POSITIVE, "--no-figures")
    assert not any((f / "montage.png").exists() for f in again.iterdir() if f.is_dir())
    assert all((f / "activation_montage.png").is_file() for f in again.iterdir() if f.is_dir())


def test_a_dicom_seg_only_for_segmented_patients(ct_volumes_dir, classifier_bundle, tmp_path, capsys):
    """A negative patient is not segmented: an empty Infection segment in the PACS would read as "none found"."""
    series = str(ct_volumes_dir / "chest-2slice" / "dicom")
    for threshold, segmented in (("1.0", False), ("0", True)):
        out = tmp_path / f"t{threshold}"
        assert main(["diagnose", series, "--out", str(out), "--classifier", str(classifier_bundle), "--no-progress",
                     "--no-figures", "--slice-threshold", "0", "--patient-threshold", threshold]) == 0
        report = json.loads((out / "dicom" / "report.json").read_text())
        assert (out / "dicom" / "infection_seg.dcm").is_file() is segmented
        assert ("dicom_seg" in report["outputs"]) is segmented
        assert (out / "dicom" / "infection_sr.dcm").is_file() is segmented  # the SR follows the SEG
        assert ("dicom_sr" in report["outputs"]) is segmented
        note = "DICOM-SEG not written: the patient was not segmented (classified negative)"
        assert (note in report["warnings"]) is not segmented
        printed = capsys.readouterr()
        assert (f"dicom: warning: {note}" in printed.out + printed.err) is not segmented


def test_infer_gate_skips_slices_below_the_threshold(ct_volumes_dir, classifier_bundle, tmp_path):
    ct = str(ct_volumes_dir / "chest-cip64" / "ct.nii.gz")
    predicted = {}
    for label, extra in (("none", []), ("all", ["--gate-threshold", "0"]), ("drop", ["--gate-threshold", "1.01"])):
        out = tmp_path / label
        gate = ["--gate", "--gate-bundle", str(classifier_bundle)] if extra else []
        assert main(["infer", ct, "--out", str(out), "--no-progress", *gate, *extra]) == 0
        report = json.loads((out / "ct" / "report.json").read_text())
        predicted[label] = report["predicted_slices"]
        gate_info = report["model"].get("gate")
        assert (gate_info is None) == (label == "none") and ("gate" in report["timing_s"]) == (label != "none")
        if gate_info is not None:  # the report names the gate that ran
            assert gate_info["classifier"] == "jcs_classifier" and gate_info["threshold"] == float(extra[-1])
    assert predicted["all"] == predicted["none"] > 0 and predicted["drop"] == 0


def test_infer_gate_threshold_alone_turns_the_gate_on(ct_volumes_dir, classifier_bundle, tmp_path, monkeypatch):
    """``--gate-threshold P`` without ``--gate`` was silently ignored (``--gate-bundle`` alone did turn it on)."""
    from covseg.cli import diagnose as diagnose_cli

    monkeypatch.setattr(diagnose_cli, "DEFAULT_CLASSIFIER", classifier_bundle)
    out = tmp_path / "o"
    ct = str(ct_volumes_dir / "chest-2slice" / "ct.nii.gz")
    assert main(["infer", ct, "--out", str(out), "--no-progress", "--no-figures", "--gate-threshold", "1.01"]) == 0
    report = json.loads((out / "ct" / "report.json").read_text())
    assert report["model"]["gate"]["threshold"] == 1.01 and report["predicted_slices"] == 0


@pytest.mark.parametrize("command, option", [("infer", "--gate-threshold"), ("diagnose", "--slice-threshold"),
                                             ("diagnose", "--patient-threshold"), ("diagnose", "--segment-gate")])
def test_a_threshold_that_is_not_a_number_is_a_usage_error(command, option, ct_volumes_dir, tmp_path, capsys):
    """NaN compares false with every score: ``--gate-threshold nan`` skipped every slice and recorded no threshold."""
    ct = str(ct_volumes_dir / "chest-2slice" / "ct.nii.gz")
    for value in ("nan", "inf"):
        out = tmp_path / f"o-{value}"
        assert main([command, ct, "--out", str(out), "--no-progress", option, value]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: {option} must be a finite number, got {value}"], err
        assert not out.exists()


@pytest.mark.parametrize("option", ["--slice-threshold", "--patient-threshold", "--segment-gate"])
def test_a_threshold_outside_0_1_is_a_usage_error(option, ct_volumes_dir, tmp_path, capsys):
    """``--patient-threshold 50`` (meant as 50 %) called every patient negative, ``-1`` positive with no positive
    slice, ``--slice-threshold 2`` every slice negative: all ran with exit 0."""
    ct = str(ct_volumes_dir / "chest-2slice" / "ct.nii.gz")
    for value in ("50", "-1", "1.01"):
        out = tmp_path / f"o{value}"
        assert main(["diagnose", ct, "--out", str(out), "--no-progress", option, value]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: {option} must be within [0, 1], got {float(value)}"], err
        assert not out.exists()
    for value in (0.0, 1.0):  # the ends are allowed: 0 for "any positive slice", 1 for "never positive"
        DiagnosisSettings(slice_threshold=value, patient_threshold=value, segment_gate=value)
    with pytest.raises(ValueError, match="patient_threshold must be within"):  # the bundle run, MONAI Label
        DiagnosisSettings.from_bundle({"patient_threshold": 50})


@pytest.mark.parametrize("command, option, bundle, kind", [
    ("infer", "--bundle", "jcs_classifier", "a slice classifier"),
    ("infer", "--gate-bundle", "infnet", "a segmentation model"),
    ("diagnose", "--classifier", "jcs_segmenter", "a segmentation model"),
    ("diagnose", "--segmenter", "jcs_classifier", "a slice classifier")])
def test_a_bundle_of_the_wrong_kind_is_one_usage_line(command, option, bundle, kind, ct_volumes_dir, tmp_path,
                                                      capsys):
    """A classifier given where a segmenter goes (or the other way round) failed every volume with a raw
    ``IndexError`` / ``ValueError`` blamed on the input, exit 1."""
    out = tmp_path / "o"
    path = REPO / "bundles" / bundle
    code = main([command, str(ct_volumes_dir / "chest-2slice" / "ct.nii.gz"), "--out", str(out), "--no-progress",
                 option, str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {option} {path}: is {kind} bundle"), err
    assert not out.exists()  # a usage error writes nothing


def test_infer_gate_without_weights_is_one_line(ct_volumes_dir, tmp_path, capsys):
    empty = tmp_path / "nobundle"
    empty.mkdir()
    code = main(["infer", str(ct_volumes_dir / "chest-2slice" / "ct.nii.gz"), "--out", str(tmp_path / "o"),
                 "--gate", "--gate-bundle", str(empty)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1 and "nobundle" in err[0]


def test_montage_sources_share_the_volumes_lung_box(tmp_path):
    """Every montage panel shows the same field of view (the volume's lung box); a slice's own crop sits inside it,
    smaller for a slice near the lung's end."""
    from covseg.engines.inference.diagnose import lung_crops, montage_sources
    from covseg.io.read import read_volume
    from covseg.synthetic.phantom import make_chest_phantom
    from covseg.synthetic.phantom_nifti import write_phantom

    ph = make_chest_phantom(shape=(12, 64, 64), spacing=(5.0, 5.0, 10.0), seed=2)
    volume = read_volume(write_phantom(tmp_path / "p.nii.gz", ph)["ct"])
    lung = (ph.lung_labels > 0).astype(np.uint8)
    zs, crops = lung_crops(volume, lung)
    sizes = [c.size for c in crops]
    picked = [zs[int(np.argmax(sizes))], zs[int(np.argmin(sizes))]]
    top = [(z, crops[zs.index(z)], 0.5) for z in picked]
    sources = montage_sources(volume, lung, np.zeros_like(lung), top)
    views = {src[3].shape for src in sources}
    assert len(views) == 1 and {src[4].shape for src in sources} == views
    (view_h, view_w), = views
    areas = []
    for (_z, _score, crop, _image, _mask, (y0, y1, x0, x1), pixel_mm) in sources:
        assert pixel_mm == (5.0, 5.0)
        assert 0 <= y0 < y1 <= view_h and 0 <= x0 < x1 <= view_w and crop.shape == (y1 - y0, x1 - x0)
        areas.append((y1 - y0) * (x1 - x0))
    assert areas[0] > areas[1]


def test_bundle_inference_run_id_diagnoses_and_fails_like_the_command(classifier_bundle, tmp_path):
    """``python -m monai.bundle run inference`` of the classifier bundle runs the joint diagnosis of ``dataset_dir``
    (MONAI's name; ``input_dir`` too); a run whose input fails exits non-zero, as ``covseg diagnose`` does."""
    import subprocess

    import SimpleITK as sitk

    from covseg.synthetic.phantom import make_chest_phantom
    from covseg.synthetic.phantom_nifti import write_phantom

    phantom = make_chest_phantom(shape=(6, 48, 48), spacing=(7.0, 7.0, 12.0), seed=1)
    ct = write_phantom(tmp_path / "in" / "p.nii.gz", phantom)["ct"]
    bad = tmp_path / "bad.nii.gz"
    bad.write_text("not a volume")

    def run(src: Path, out: Path, key: str = "--dataset_dir", *extra: str) -> subprocess.CompletedProcess:
        cmd = monai_bundle_run(classifier_bundle, "inference", "inference.yaml", "--segmenter",
                               str(REPO / "bundles" / "infnet"), key, str(src), "--output_dir", str(out), *extra)
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})

    ok = run(ct, tmp_path / "out")
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    assert json.loads((tmp_path / "out" / "p" / "diagnosis.json").read_text())["lung_slices"] > 0
    thresholds = {"slice_threshold": 0.0, "patient_threshold": 0.0, "min_lung_area_cm2": 0.0}
    overrides = [a for k, v in thresholds.items() for a in (f"--covseg#{k}", str(v))]
    ok = run(ct, tmp_path / "out-0", "--dataset_dir", *overrides)  # they were read from the file, not the run
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    d = json.loads((tmp_path / "out-0" / "p" / "diagnosis.json").read_text())
    assert d["decision"] == "positive" and {k: d["settings"][k] for k in thresholds} == thresholds
    # the decision is printed under the table as covseg diagnose prints it (it was missing: docs walk, 2026-12-07)
    assert "\np: POSITIVE (" in ok.stdout and "1 of 1 volume(s) diagnosed in " in ok.stdout, ok.stdout[-2000:]
    (tmp_path / "labels").mkdir()  # lungs 1 / 2 and infection 3: with --label_values "[3]" the infection alone counts
    sitk.WriteImage(phantom.image(np.where(phantom.infection > 0, 3, phantom.lung_labels).astype(np.uint8)),
                    str(tmp_path / "labels" / "p.nii.gz"))
    scored = run(ct, tmp_path / "out-labels", "--dataset_dir", *overrides, "--labels_dir", str(tmp_path / "labels"),
                 "--label_values", "[3]")
    assert scored.returncode == 0, scored.stdout[-2000:] + scored.stderr[-2000:]
    report = json.loads((tmp_path / "out-labels" / "p" / "report.json").read_text())
    mask = np.asarray(nib.load(tmp_path / "out-labels" / "p" / "infection_mask.nii.gz").dataobj) > 0
    truth = np.asarray(nib.load(tmp_path / "labels" / "p.nii.gz").dataobj) == 3
    assert report["label_values"] == [3] and report["metrics"]["sensitivity"] == pytest.approx(
        (mask & truth).sum() / truth.sum(), abs=1e-5)
    failed = run(bad, tmp_path / "out-bad", "--input_dir")  # the older name still works
    assert failed.returncode != 0 and "error: " in failed.stderr and "bad.nii.gz" in failed.stderr


def test_min_lung_fraction_out_of_range_is_one_line(tmp_path, capsys):
    assert main(["diagnose", str(tmp_path / "x.nii.gz"), "--out", str(tmp_path / "o"), "--min-lung-fraction",
                 "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --min-lung-fraction must be within [0, 1], got 1.5"]
    assert not (tmp_path / "o").exists()


def _scoring_classifier() -> tuple[torch.nn.Module, list[np.ndarray]]:
    """An untrained classifier whose scores differ between crops, and five crops of different sizes."""
    torch.manual_seed(0)
    net = SliceClassifier().eval()
    for m in net.modules():  # trained-looking BatchNorm statistics, so that folding them changes the weights
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    head = [m for m in net.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))][-1]
    head.weight.data *= 1e-3 / head.weight.abs().max()  # an untrained head saturates the softmax: tame it
    return net, [np.random.default_rng(i).random((40 + 7 * i, 52), dtype=np.float32) for i in range(5)]


def test_the_fast_scorer_gives_the_networks_scores_and_leaves_it_alone():
    net, crops = _scoring_classifier()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast, plain = SliceScorer(net, 64, batch_size=2), SliceScorer(net, 64, batch_size=2, fast=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast._module.modules())
    got, want = fast(crops), plain(crops)
    assert want.std() > 1e-3  # the crops score differently, so agreement is not a constant
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # the activation maps' network
    assert fast.network is net and any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


def test_the_scorer_on_onnx_runtime_gives_the_networks_scores(tmp_path):
    require("onnxruntime", reason="the onnx extra is not installed (pip install 'covseg[onnx]')")
    net, crops = _scoring_classifier()
    runtime = onnx_runtime_network(net, 64, cache=tmp_path)
    on_ort = SliceScorer(net, 64, batch_size=2, bf16=True, scoring=runtime)
    assert (on_ort.backend, on_ort.bf16, on_ort.network) == ("onnxruntime", False, net)  # ONNX Runtime runs fp32
    want = SliceScorer(net, 64, batch_size=2, fast=False)(crops)
    assert want.std() > 1e-3
    np.testing.assert_allclose(on_ort(crops), want, atol=1e-5)


def test_the_shipped_classifier_scores_on_onnx_runtime_from_its_template(tmp_path, monkeypatch):
    """``scoring_runtime``: None where the backend is torch; else the bundle's export, here filled from its
    template without tracing the network."""
    require("onnxruntime", reason="the onnx extra is not installed (pip install 'covseg[onnx]')")
    monkeypatch.setenv("COVSEG_CACHE", str(tmp_path / "cache"))
    classifier = load_bundle(REPO / "bundles" / "jcs_classifier")
    assert scoring_runtime(classifier, "torch") is None

    def no_export(*args, **kwargs):
        raise AssertionError("the classifier was traced")

    monkeypatch.setattr(onnx_runtime, "export_onnx", no_export)
    runtime = scoring_runtime(classifier, "onnxruntime")
    x = torch.rand(2, 1, classifier.image_size, classifier.image_size)
    with torch.no_grad():
        torch.testing.assert_close(runtime(x), classifier.network(x), atol=1e-4, rtol=1e-4)


def test_gate_scores_only_crops_it_does_not_know():
    from covseg.engines.inference.slice_scorer import ClassifierGate, crop_key

    scored: list[int] = []

    class MeanScorer:  # a stand-in classifier: the crop's mean is its score
        bf16 = False

        def __call__(self, crops):
            scored.append(len(crops))
            return np.asarray([float(np.mean(c)) for c in crops])

    crops = [np.full((8, 9), v, np.float32) for v in (0.1, 0.4, 0.6, 0.9)]
    plain = ClassifierGate(MeanScorer(), 0.5)(crops)
    assert plain == [False, False, True, True] and scored == [4]
    known = {crop_key(crops[0]): 0.1, crop_key(crops[2]): 0.6}
    assert ClassifierGate(MeanScorer(), 0.5, known=known)(crops) == plain and scored == [4, 2]
    assert ClassifierGate(MeanScorer(), 0.5, known=known)(crops[2:3]) == [True] and scored == [4, 2]  # no call
    assert crop_key(crops[0]) != crop_key(crops[0].reshape(9, 8))  # same values, other shape: another crop


def test_segment_gate_reuses_the_diagnosis_scores(ct_volumes_dir, classifier_bundle, tmp_path, monkeypatch):
    calls: list[int] = []
    score = SliceScorer.__call__

    def counting(self, crops):
        calls.append(len(crops))
        return score(self, crops)

    monkeypatch.setattr(SliceScorer, "__call__", counting)
    out = tmp_path / "gated"
    assert main(["diagnose", str(ct_volumes_dir / "chest-cip64" / "ct.nii.gz"), "--out", str(out), "--classifier",
                 str(classifier_bundle), "--no-progress", *ALWAYS_POSITIVE, "--min-lung-fraction", "0",
                 "--segment-gate", "0"]) == 0
    d = json.loads((out / "ct" / "diagnosis.json").read_text())
    assert d["classified_slices"] == d["lung_slices"] == d["segmented_slices"] > 0
    assert sum(calls) == d["lung_slices"]  # every lung slice scored once: the gate reused the diagnosis' scores


def test_ctrl_c_keeps_the_finished_volume_in_the_summary(ct_volumes_dir, classifier_bundle, tmp_path, monkeypatch,
                                                        capsys):
    from covseg.engines.inference.predictor import SlicePredictor

    calls = {"n": 0}
    predict = SlicePredictor.predict

    def ctrl_c_after_the_first_call(self, crops):  # chest-2slice's two lung slices are one batch: one call
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        return predict(self, crops)

    monkeypatch.setattr(SlicePredictor, "predict", ctrl_c_after_the_first_call)
    out = tmp_path / "stopped"
    first, second = (str(ct_volumes_dir / n / "ct.nii.gz") for n in ("chest-2slice", "chest-cip64"))
    code = main(["diagnose", first, second, "--out", str(out), "--classifier", str(classifier_bundle),
                 "--no-progress", *ALWAYS_POSITIVE, "--no-figures"])
    assert code == 130 and calls["n"] == 2
    assert capsys.readouterr().err.strip().endswith(f"complete in {out}/ (summary.json)")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and [v["status"] for v in summary["volumes"]] == ["ok"]
    assert (out / summary["volumes"][0]["name"] / "diagnosis.json").is_file()


def test_too_little_lung_for_the_classifier_is_indeterminate():
    s = DiagnosisSettings(slice_threshold=0.5, patient_threshold=0.5, min_lung_area_cm2=120.0)
    scores = [0.9, 0.8, 0.7]
    assert decide(scores, s)["decision"] == "positive" and "largest_lung_cm2" not in decide(scores, s)
    assert decide(scores, s, largest_lung_cm2=193.0)["decision"] == "positive"
    d = decide(scores, s, largest_lung_cm2=96.6)
    assert d["decision"] == "indeterminate" and d["positive"] is None and d["positive_slices"] == 3
    assert "97 cm² < 120" in d["indeterminate_reason"] and d["largest_lung_cm2"] == 96.6
    assert decide([], s, lung_slices=0, largest_lung_cm2=0.0)["indeterminate_reason"] == "no lung found"
    off = DiagnosisSettings(min_lung_area_cm2=0.0)
    assert decide([0.1, 0.2], off, largest_lung_cm2=5.0)["decision"] == "negative"


def test_an_abdominal_scan_with_the_lung_bases_is_indeterminate_and_segmented(ct_volumes_dir, classifier_bundle,
                                                                              tmp_path, capsys):
    from covseg.engines.inference.diagnose import largest_lung_area_cm2

    ct = str(ct_volumes_dir / "abdomen-totalseg" / "example_ct.nii.gz")
    out = tmp_path / "abdomen"
    assert main(["diagnose", ct, "--out", str(out), "--classifier", str(classifier_bundle), "--no-progress",
                 "--patient-threshold", "1.0"]) == 0  # the count rule alone would say negative
    assert "example_ct: INDETERMINATE (no slice shows the middle of the lungs" in capsys.readouterr().out
    d = json.loads((out / "example_ct" / "diagnosis.json").read_text())
    assert d["decision"] == "indeterminate" and d["positive"] is None and d["segmented"] is True
    assert d["segmented_slices"] == d["lung_slices"] > 0 and d["largest_lung_cm2"] < 120
    assert 'data-diagnosis="indeterminate"' in (out / "report.html").read_text()
    lung = np.zeros((3, 10, 10), np.uint8)
    lung[1, :4, :5] = 1
    assert largest_lung_area_cm2(lung, (2.0, 5.0, 1.0)) == 20 * 10.0 / 100.0
    again = tmp_path / "rule-off"
    assert main(["diagnose", ct, "--out", str(again), "--classifier", str(classifier_bundle), "--no-progress",
                 "--patient-threshold", "1.0", "--min-lung-area", "0"]) == 0
    assert json.loads((again / "example_ct" / "diagnosis.json").read_text())["decision"] == "negative"


def test_diagnose_continue_keeps_done_volumes_of_the_same_settings(ct_volumes_dir, classifier_bundle, tmp_path,
                                                                   capsys):
    ct = str(ct_volumes_dir / "chest-2slice" / "ct.nii.gz")
    out = tmp_path / "resume"

    def run(*extra: str) -> str:
        assert main(["diagnose", ct, "--out", str(out), "--classifier", str(classifier_bundle), "--no-progress",
                     "--patient-threshold", *extra]) == 0
        return capsys.readouterr().out

    assert "kept from an earlier run" not in run("1.0")
    assert "1 of 1 volume(s) diagnosed (1 kept from an earlier run)" in run("1.0", "--continue")
    changed = run("0", "--slice-threshold", "0", "--continue")  # other thresholds: diagnosed again
    assert "kept from an earlier run" not in changed and "POSITIVE" in changed
    request = json.loads((out / "ct" / "report.json").read_text())["request"]
    assert request["settings"]["patient_threshold"] == 0.0 and request["model"]["classifier"]["name"]


def test_diagnose_runs_the_segmenter_on_the_backend_asked_for(ct_volumes_dir, classifier_bundle, tmp_path,
                                                              monkeypatch, capsys):
    """``--backend`` as in covseg infer: ONNX Runtime segments a positive patient with torch's mask and the report
    says which ran; ONNX Runtime on a GPU is one error line."""
    monkeypatch.setenv("COVSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COVSEG_PRECISION", "fp32")  # like with like: ONNX Runtime runs fp32, so torch does too
    ct = str(ct_volumes_dir / "chest-2slice" / "ct.nii.gz")
    masks = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / backend
        assert main(["diagnose", ct, "--out", str(out), "--classifier", str(classifier_bundle), "--no-progress",
                     *ALWAYS_POSITIVE, "--backend", backend]) == 0
        report = json.loads((out / "ct" / "report.json").read_text())
        assert report["model"]["backend"] == backend and report["model"]["precision"] == "fp32"
        assert report["model"]["classifier"]["backend"] == backend  # the classifier scores on the same backend
        masks[backend] = np.asarray(nib.load(out / "ct" / "infection_mask.nii.gz").dataobj)
    # both fp32, summed in different orders: a voxel on 0.5 may flip (as in test_onnx_runtime's CLI test)
    assert_masks_agree(masks["torch"], masks["onnxruntime"], max_flip_fraction=1e-3)
    capsys.readouterr()
    if not torch.cuda.is_available():
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    code = main(["diagnose", ct, "--out", str(tmp_path / "gpu"), "--backend", "onnxruntime", "--device", "cuda"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: --backend onnxruntime runs on the CPU only") and "\n" not in err


def test_a_volume_s_total_time_includes_its_classification(ct_volumes_dir, classifier_bundle, tmp_path, monkeypatch):
    """report.json's ``timing_s.total`` (summary.csv ``seconds``, the console's time) left the classifier out: on
    chest-cip64 ``classify`` 4.8 s beside a ``total`` of 2.8 s."""
    import time

    score = SliceScorer.__call__

    def slow(self, crops):
        time.sleep(0.5)
        return score(self, crops)

    monkeypatch.setattr(SliceScorer, "__call__", slow)
    out = tmp_path / "timed"
    assert main(["diagnose", str(ct_volumes_dir / "chest-2slice" / "ct.nii.gz"), "--out", str(out), "--classifier",
                 str(classifier_bundle), "--no-progress", "--no-figures"]) == 0
    timing = json.loads((out / "ct" / "report.json").read_text())["timing_s"]
    steps = sum(timing[k] for k in ("read", "lung_mask", "classify", "write"))  # one after the other
    assert timing["classify"] >= 0.5 and timing["total"] >= steps - 0.01, timing
    row = next(csv.DictReader((out / "summary.csv").open()))
    assert float(row["seconds"]) == timing["total"]


def test_diagnose_labels_score_the_joint_result(ct_volumes_dir, classifier_bundle, tmp_path, capsys):
    """``--labels`` with ``--label-values``: a segmented patient's mask is scored against the label's infection
    value alone; a patient classified negative keeps an empty mask, so a missed infection scores Sen. 0; summary.csv
    names the values scored. The values without ``--labels`` are a usage error before any output."""
    ct = ct_volumes_dir / "chest-2slice" / "ct.nii.gz"
    image = nib.load(ct)
    lungs = np.zeros(image.shape, np.uint8)
    lungs[image.shape[0] // 8: image.shape[0] // 2] = 1  # stand-in "lungs" (scored as background with 3 given)
    lungs[image.shape[0] // 2: 7 * image.shape[0] // 8] = 2
    lungs[image.shape[0] // 4: image.shape[0] // 3, image.shape[1] // 3: image.shape[1] // 2] = 3  # "infection"
    labels = tmp_path / "labels"
    labels.mkdir()
    nib.save(nib.Nifti1Image(lungs, image.affine), labels / "ct.nii.gz")
    given = ("--labels", str(labels), "--label-values", "3")
    reports = {}
    for name, thresholds in (("neg", ("--patient-threshold", "1.0")), ("pos", ALWAYS_POSITIVE)):
        assert main(["diagnose", str(ct), "--out", str(tmp_path / name), "--classifier", str(classifier_bundle),
                     "--no-progress", *thresholds, *given]) == 0
        reports[name] = json.loads((tmp_path / name / "ct" / "report.json").read_text())
        assert reports[name]["label_values"] == [3] and reports[name]["request"]["label_values"]["infection"] == [3]
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["labels"] == str(labels) and summary["label_values"] == {"infection": [3], "classes": None}
        row = next(csv.DictReader((tmp_path / name / "summary.csv").open()))
        assert row["label_values"] == "3" and float(row["dice"]) == reports[name]["metrics"]["dice"]
    assert reports["neg"]["diagnosis"]["decision"] == "negative"
    assert reports["neg"]["metrics"]["sensitivity"] == 0.0 and reports["neg"]["metrics"]["dice"] == 0.0
    mask = np.asarray(nib.load(tmp_path / "pos" / "ct" / "infection_mask.nii.gz").dataobj) > 0
    truth = lungs == 3
    assert mask.any()  # segmented: its scores are those of the written mask against value 3 alone
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert reports["pos"]["metrics"]["dice"] == pytest.approx(dice, abs=1e-5)
    capsys.readouterr()
    assert main(["diagnose", str(ct), "--out", str(tmp_path / "bad"), "--label-values", "3"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --label-values goes with --labels DIR (it says which values of those masks are scored)"]
    assert not (tmp_path / "bad").exists()
