"""The ``covseg`` command through ``main([...])``: exit codes, error lines, outputs, evaluate, demo."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from utils import conv_bundle, use_tiny_default_model

from covseg.cli.main import main
from covseg.synthetic.phantom import make_chest_phantom
from covseg.synthetic.phantom_nifti import write_phantom

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def tiny_model(monkeypatch):
    """Make the CLI's default model a tiny untrained U-Net at 32x32 (``--model``/``--bundle`` ignored)."""
    return use_tiny_default_model(monkeypatch)


@pytest.fixture(scope="module")
def good_ct(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_in")
    phantom = make_chest_phantom(shape=(12, 64, 64), spacing=(5.6, 5.6, 10.0), seed=2)
    return write_phantom(folder / "good.nii.gz", phantom)["ct"]


def test_batch_without_a_terminal_logs_one_progress_line_per_volume(tmp_path, good_ct, tiny_model, capsys):
    """stderr to a log file (a batch job): the bar is off, and a long batch printed nothing but its errors until
    the end (audit of 2026-12-07); now one ``progress:`` line per volume, with the count and the time left."""
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"")
    out = tmp_path / "out"
    assert main(["infer", str(good_ct), str(bad), "--out", str(out), "--no-figures"]) == 1
    lines = capsys.readouterr().err.splitlines()
    progress = [line for line in lines if line.startswith("progress:")]
    assert len(progress) == 2 and progress[0].startswith("progress: 1/2 good ok; "), progress
    assert progress[0].endswith(" left") and progress[1].startswith("progress: 2/2 bad FAILED, 1 failed; "), progress
    assert lines.index(f"error: {bad}: file is empty (0 bytes)") < lines.index(progress[1])
    assert main(["infer", str(good_ct), "--out", str(out), "--no-figures", "--continue", "--no-progress"]) == 0
    assert not [line for line in capsys.readouterr().err.splitlines() if line.startswith("progress:")]


def test_progress_line_durations():
    from covseg.cli.progress import duration_text

    assert [duration_text(s) for s in (0.4, 59.6, 61, 3599, 3600 * 3 + 12 * 60 + 5)] == [
        "0 s", "1 min 00 s", "1 min 01 s", "59 min 59 s", "3 h 12 min"]


def test_time_left_leaves_out_the_start_up(capsys):
    """The estimate is the rate of the volumes since the first one started: 100 s of imports and model loading
    before it, then 10 s for one volume, leave about 20 s for two more (it said 3 min 40 s, counting the start-up)."""
    import time
    from types import SimpleNamespace

    from covseg.cli.progress import VolumeProgress

    with VolumeProgress(3, disable=False) as bar:
        bar.lines = True
        bar.started = time.perf_counter() - 110
        bar.on_start(SimpleNamespace(name="a"))
        bar.first_volume = time.perf_counter() - 10
        bar.on_result(SimpleNamespace(name="a", ok=True, earlier=False, error=None))
    line = [x for x in capsys.readouterr().err.splitlines() if x.startswith("progress:")][-1]
    assert line.startswith("progress: 1/3 a ok; 1 min 50 s elapsed, about ") and line.endswith(" left"), line
    assert line.endswith("about 20 s left"), line


def test_good_and_bad_input_in_one_batch(tmp_path, good_ct, tiny_model, capsys):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"")
    out = tmp_path / "out"
    code = main(["infer", str(good_ct), str(bad), "--out", str(out), "--no-progress", "--save-prob"])
    assert code == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {bad}: file is empty (0 bytes)"]
    assert "good" in captured.out and "FAILED" in captured.out
    # the good volume is complete, the bad one left nothing
    assert sorted(p.name for p in out.iterdir()) == [".covseg.lock", "good", "report.html", "summary.csv",
                                                     "summary.json"]
    assert sorted(p.name for p in (out / "good").iterdir()) == [
        "infection_curve.png", "infection_mask.nii.gz", "infection_prob.nii.gz", "lung_mask.nii.gz", "montage.png",
        "reformats.png", "report.json", "slices.csv"]
    ref = nib.load(str(good_ct))
    np.testing.assert_allclose(nib.load(str(out / "good" / "infection_mask.nii.gz")).affine, ref.affine, atol=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["n_ok"], summary["n_failed"]) == (1, 1)
    assert summary["volumes"][1]["status"] == "error"


def test_all_good_exits_zero(tmp_path, good_ct, tiny_model):
    assert main(["infer", str(good_ct), "--out", str(tmp_path), "--no-progress", "--batch-size", "3"]) == 0
    report = json.loads((tmp_path / "good" / "report.json").read_text())
    assert report["model"]["name"] == "tiny-unet" and report["lung_ml"] > 0


def test_unwritable_out_and_usage_errors(tmp_path, good_ct, tiny_model, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["infer", str(good_ct), "--out", str(blocker / "sub"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "not writable" in err[0]
    assert main(["infer", str(good_ct), "--no-progress"]) == 2  # --out missing
    assert main(["infer", str(good_ct), "--out", str(tmp_path), "--labels", str(tmp_path / "nope")]) == 2
    assert main(["infer", str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    assert main(["frobnicate"]) == 2
    assert main([]) == 2


@pytest.mark.parametrize("command", ["infer", "diagnose"])
def test_unusable_device_is_one_line_and_leaves_no_output_folder(command, tmp_path, good_ct, capsys):
    import torch

    bad = ["cuda:99", "tpu"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in bad:
        out = tmp_path / f"out-{device.replace(':', '_')}"
        assert main([command, str(good_ct), "--out", str(out), "--device", device, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: --device {device}: "), err
        assert not out.exists()  # a usage error writes nothing


@pytest.mark.parametrize("command, option", [("infer", "--out"), ("diagnose", "--out"), ("infer", "--labels")])
def test_empty_folder_option_is_a_usage_error_not_the_current_folder(command, option, tmp_path, good_ct,
                                                                       monkeypatch, capsys):
    """``--out "$OUT"`` with an unset variable must not write the results into the current folder."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    args = [command, str(good_ct), "--no-progress"] + (["--out", str(tmp_path / "o")] if option != "--out" else [])
    for empty in ("", "  "):
        assert main(args + [option, empty]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: {option} is empty: give a folder (see covseg {command} --help)"], err
    assert list(cwd.iterdir()) == [] and not (tmp_path / "o").exists()  # nothing written anywhere


def test_missing_labels_folder_is_one_line_and_leaves_no_output_folder(tmp_path, good_ct, capsys):
    out, labels = tmp_path / "out", tmp_path / "no-labels"
    assert main(["infer", str(good_ct), "--out", str(out), "--labels", str(labels), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {labels}: labels folder not found"], err
    assert not out.exists()  # a usage error writes nothing


@pytest.mark.parametrize("command, option", [("infer", "--bundle"), ("infer", "--gate-bundle"),
                                             ("diagnose", "--classifier"), ("diagnose", "--segmenter")])
def test_a_bundle_that_is_not_there_is_one_line_and_leaves_no_output_folder(command, option, tmp_path, good_ct,
                                                                            capsys):
    out, bundle = tmp_path / "out", tmp_path / "no-bundle"
    assert main([command, str(good_ct), "--out", str(out), option, str(bundle), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {bundle / 'configs' / 'inference.yaml'}: not found (is {bundle} a covseg bundle?)"], err
    assert not out.exists()  # a usage error writes nothing


def test_weights_option_runs_a_training_runs_weights_in_the_bundles_network(tmp_path, good_ct, capsys):
    """``--weights``: a run's checkpoint in the bundle's network (the bundle's own weights otherwise); the reports
    name the file, so ``--continue`` does not keep results of other weights; a bad use is one usage line."""
    import torch

    bundle, _ = conv_bundle(tmp_path / "bundle")  # a 3x3 convolution, weights of seed 0
    run = tmp_path / "run"
    run.mkdir()
    hot = torch.nn.Conv2d(1, 1, 3, padding=1)
    torch.nn.init.zeros_(hot.weight)
    torch.nn.init.constant_(hot.bias, 20.0)  # every lung pixel infected
    torch.save({"network": hot.state_dict(), "trainer": {"epoch": 2}}, run / "checkpoint_2.pt")
    common = [str(good_ct), "--bundle", str(bundle), "--backend", "torch", "--no-figures", "--no-progress"]
    assert main(["infer", *common, "--out", str(tmp_path / "own")]) == 0
    assert main(["infer", *common, "--weights", str(run / "checkpoint_2.pt"), "--out", str(tmp_path / "run-out")]) == 0
    own = json.loads((tmp_path / "own" / "good" / "report.json").read_text())
    tuned = json.loads((tmp_path / "run-out" / "good" / "report.json").read_text())
    assert "weights" not in own["model"] and str(run / "checkpoint_2.pt") in tuned["model"]["weights"]
    assert tuned["infection_ml"] > own["infection_ml"]
    assert tuned["lung_involvement_percent"] == pytest.approx(100.0)
    capsys.readouterr()
    assert main(["infer", *common, "--weights", str(run / "nothing.pt"), "--out", str(tmp_path / "x")]) == 2
    assert main(["infer", str(good_ct), "--model", "unet", "--weights", str(run / "checkpoint_2.pt"), "--out",
                 str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [line.split(":")[0] for line in err] == ["error", "error"] and "nothing.pt: not found" in err[0]
    assert "not with --model" in err[1] and not (tmp_path / "x").exists()


def test_label_values_option_scores_a_lung_and_infection_label(tmp_path, tiny_model, capsys):
    """``--labels`` in COVID-19-CT-Seg's layout (1, 2 lungs, 3 infection): as they are, the lungs are scored as
    infection, with a warning that points to ``--label-values``; with ``--label-values 3`` the scores are those
    against the infection alone, without it, and report.json (and the request ``--continue`` compares) names the
    values. A bad value is argparse's usage error (exit 2), before any output."""
    import SimpleITK as sitk

    ph = make_chest_phantom(shape=(12, 64, 64), spacing=(5.6, 5.6, 10.0), seed=2)
    ct = write_phantom(tmp_path / "in" / "case.nii.gz", ph)["ct"]
    alone, both = tmp_path / "alone", tmp_path / "both"
    alone.mkdir()
    both.mkdir()
    sitk.WriteImage(ph.image(ph.infection), str(alone / "case.nii.gz"))
    sitk.WriteImage(ph.image(np.where(ph.infection > 0, 3, ph.lung_labels).astype(np.uint8)), str(both / "case.nii.gz"))
    common = [str(ct), "--no-figures", "--no-progress"]

    def report(labels, out, *extra) -> dict:
        assert main(["infer", *common, "--labels", str(labels), "--out", str(tmp_path / out), *extra]) == 0
        return json.loads((tmp_path / out / "case" / "report.json").read_text())

    reference, plain, given = report(alone, "a"), report(both, "b"), report(both, "c", "--label-values", "3")
    assert [w for w in plain["warnings"] if w.startswith("label holds values 1, 2, 3: every non-zero voxel")]
    assert "with --label-values V[,V]" in " ".join(plain["warnings"]) and plain["label_values"] == [1, 2, 3]
    assert plain["metrics"] != reference["metrics"]
    assert given["metrics"] == reference["metrics"] and given["label_values"] == [3]
    assert not [w for w in given["warnings"] if "label" in w]
    assert given["request"]["label_values"] == {"infection": [3], "classes": None}
    assert "label_values" not in plain["request"]  # the requests of runs without the option are as before
    summaries = [json.loads((tmp_path / out / "summary.json").read_text()) for out in "bc"]
    assert summaries[0]["label_values"] is None and summaries[1]["label_values"] == {"infection": [3], "classes": None}
    capsys.readouterr()
    for extra in (["--label-values", "3,x"], ["--label-values", ""], ["--label-classes", "1,1"]):
        assert main(["infer", *common, "--labels", str(both), "--out", str(tmp_path / "bad"), *extra]) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith("covseg infer: error: argument --label-")
    assert main(["infer", *common, "--out", str(tmp_path / "bad"), "--label-values", "3"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --label-values goes with --labels DIR (it says which values of those masks are scored)"]
    assert not (tmp_path / "bad").exists()


def test_a_label_shared_by_two_inputs_of_one_name_is_warned_about(tmp_path, tiny_model, capsys):
    """Two inputs named ``ct`` (``a/ct.nii.gz``, ``b/ct.nii.gz``): the second's folder gets the naming tag and finds
    ``labels/ct.nii.gz`` too, so both are scored against one label; the tagged one says so (the first, whose label
    it is by name, does not). A label named with the tag is that volume's own, without the warning."""
    import SimpleITK as sitk

    from covseg.io.labels import shared_label_note

    ph = make_chest_phantom(shape=(12, 64, 64), spacing=(5.6, 5.6, 10.0), seed=2)
    cts = [write_phantom(tmp_path / site / "ct.nii.gz", ph)["ct"] for site in ("a", "b")]
    labels = tmp_path / "labels"
    labels.mkdir()
    sitk.WriteImage(ph.image(ph.infection), str(labels / "ct.nii.gz"))
    assert main(["infer", *map(str, cts), "--labels", str(labels), "--out", str(tmp_path / "out"), "--no-figures",
                 "--no-progress"]) == 0
    reports = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "out").glob("*/report.json")}
    tagged = next(name for name in reports if name != "ct")
    assert set(reports) == {"ct", tagged} and reports["ct"]["metrics"] and reports[tagged]["metrics"]
    assert not [w for w in reports["ct"]["warnings"] if "naming tag" in w]
    shared = [w for w in reports[tagged]["warnings"] if "naming tag" in w]
    assert len(shared) == 1 and shared[0].startswith(f"label ct.nii.gz is that of ct, the name without covseg's "
                                                     f"naming tag _{tagged[3:]}")
    assert shared_label_note(tagged, labels / f"{tagged}.nii.gz") is None  # its own label
    assert shared_label_note("case_0000", labels / "case.nii.gz") is None  # nnU-Net's channel, not a tag


def test_image_size_option_sets_the_network_input(tmp_path, good_ct, tiny_model, capsys):
    seen = set()
    tiny_model.register_forward_hook(lambda module, inputs, output: seen.add(tuple(inputs[0].shape[-2:])))
    assert main(["infer", str(good_ct), "--out", str(tmp_path), "--no-progress", "--image-size", "64"]) == 0
    assert seen == {(64, 64)}
    assert json.loads((tmp_path / "good" / "report.json").read_text())["model"]["image_size"] == 64
    for bad in ("48", "32", "0"):
        assert main(["infer", str(good_ct), "--out", str(tmp_path / "o"), "--image-size", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: --image-size must be a multiple of 32 and at least 64, got {bad}"]


def test_unknown_model_is_one_line(tmp_path, good_ct, capsys):
    assert main(["infer", str(good_ct), "--out", str(tmp_path), "--model", "nonet", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown network 'nonet'")


@pytest.mark.parametrize("command", [[], ["infer"], ["evaluate"], ["demo"]])
def test_help(command, capsys):
    assert main([*command, "--help"]) == 0
    assert "example" in capsys.readouterr().out


def test_help_does_not_contradict_the_install(capsys):
    """onnxruntime is a requirement of covseg itself and bundles/infnet ships weights (docs walk, 2026-12-07)."""
    for command in (["infer"], ["diagnose"], ["demo"]):
        assert main([*command, "--help"]) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert "needs covseg[onnx])" not in out
        assert "until weights ship" not in out


def test_python_dash_m():
    proc = subprocess.run([sys.executable, "-m", "covseg", "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("covseg ")


def _png(path, array):
    Image.fromarray(array.astype(np.uint8)).save(path)


def test_evaluate_json_and_table(tmp_path, capsys):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        mask = np.zeros((24, 24), np.uint8)
        mask[4:12 + i, 5:15] = 255
        _png(gt / f"img{i}.png", mask)
        _png(pred / f"img{i}.png", np.clip(mask * 0.8 + rng.integers(0, 40, mask.shape), 0, 255))
    assert main(["evaluate", str(pred), str(gt), "--json", "--csv", str(tmp_path / "per_image.csv")]) == 0
    figures = json.loads(capsys.readouterr().out)
    for key in ("meanDic", "meanSen", "meanSpe", "Sm", "meanEm", "MAE", "adpDice", "maxDic"):
        assert key in figures and 0.0 <= figures[key] <= 1.0
    assert figures["n_images"] == 3 and "per_image" not in figures
    assert len((tmp_path / "per_image.csv").read_text().splitlines()) == 4
    assert main(["evaluate", str(pred), str(gt), "--name", "mine"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["model", "Dice", "Sen."] and lines[1].startswith("mine")
    assert main(["evaluate", str(pred), str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err.startswith("error: ")


def test_evaluate_names_the_file_at_fault(tmp_path, capsys):
    """A 0/1 mask is the mask's fault, not the prediction's; a --csv that is a folder is one plain line."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    mask = np.zeros((24, 24), np.uint8)
    mask[4:12, 5:15] = 255
    for i in range(2):
        _png(gt / f"img{i}.png", mask)
        _png(pred / f"img{i}.png", mask * 0.8)
    _png(gt / "img1.png", mask // 255)  # a 0/1 label map
    assert main(["evaluate", str(pred), str(gt)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {gt / 'img1.png'}: "), err
    assert "0 and 1" in err[0] and "astype" not in err[0], err
    _png(gt / "img1.png", mask)
    folder = tmp_path / "scores"
    folder.mkdir()
    assert main(["evaluate", str(pred), str(gt), "--csv", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {folder}: cannot be written (a folder has that name)"], err
    assert list(folder.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["gt", "pred", "scores"]


def test_demo_runs(tmp_path, tiny_model, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--phantom-shape", "10,48,48", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "phantom" in captured.out and str(out / "phantom") in captured.out
    report = json.loads((out / "phantom" / "report.json").read_text())
    assert report["lung_ml"] > 0 and report["metrics"] is not None  # scored against the phantom's lesions
    assert any("no trained weights" in w for w in report["warnings"])


def test_infer_without_input_runs_the_demo(tmp_path, tiny_model, monkeypatch):
    import covseg.cli.demo as demo

    monkeypatch.setattr(demo, "DEMO_SHAPE", (8, 48, 48))
    assert main(["infer", "--out", str(tmp_path), "--no-progress"]) == 0
    assert (tmp_path / "phantom" / "infection_mask.nii.gz").exists()
    assert (tmp_path / "demo" / "input" / "phantom.nii.gz").exists()


def test_demo_with_flip_tta_records_it(tmp_path, tiny_model):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--phantom-shape", "8,48,48", "--no-progress", "--tta"]) == 0
    report = json.loads((out / "phantom" / "report.json").read_text())
    assert report["model"]["tta"] is True


def test_the_first_volume_is_read_ahead_except_under_torchrun_or_when_it_will_be_skipped(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from covseg.cli.common import read_first_ahead

    calls = []
    found = SimpleNamespace(data=[SimpleNamespace(name="chest")],
                            prefetch=lambda i, process: calls.append((i, process)))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    read_first_ahead(found, tmp_path, skip_done=True)  # nothing done yet: read ahead
    assert calls == [(0, True)]
    (tmp_path / "chest").mkdir()
    (tmp_path / "chest" / "report.json").write_text("{}")
    read_first_ahead(found, tmp_path, skip_done=True)  # --continue will skip it
    read_first_ahead(SimpleNamespace(data=[], prefetch=None), tmp_path)  # no input
    monkeypatch.setenv("WORLD_SIZE", "2")
    read_first_ahead(found, tmp_path)  # torchrun: each rank reads its own share
    assert calls == [(0, True)]
    monkeypatch.setenv("WORLD_SIZE", "1")
    read_first_ahead(found, tmp_path, skip_done=False)
    assert calls == [(0, True), (0, True)]
