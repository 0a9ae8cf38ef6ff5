"""Fast checks of covseg's MONAI Label app pieces without a server: the pydicom 3 shim, training slices, which
weights an infer task runs, and the label-server command's argument handling."""

from __future__ import annotations

import importlib
import importlib.util
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import yaml
from utils import python_output, require

from covseg.apps.monailabel import compat
from covseg.apps.monailabel.training_slices import slices_of_volume, training_slices
from covseg.apps.monailabel.weights import ModelCache, load_state, resolve_weights
from covseg.cli import label_server
from covseg.cli.main import main
from covseg.io.errors import CovsegInputError
from covseg.synthetic.phantom import make_chest_phantom


def test_shim_serves_pydicom2_sop_class_uids_from_pydicom_uid():
    import pydicom.uid

    compat.install()
    old = importlib.import_module(compat.OLD_MODULE)
    assert old.SegmentationStorage == pydicom.uid.SegmentationStorage
    assert old.CTImageStorage == "1.2.840.10008.5.1.4.1.1.2"
    with pytest.raises(AttributeError):
        old.NotAStorageClass  # noqa: B018
    with pytest.raises(AttributeError):
        old.generate_uid  # noqa: B018  (only UIDs are served, not pydicom.uid's functions)


def test_pydicom_seg_imports_beside_pydicom3():
    """In a fresh interpreter, as in the server and its train subprocess: importing covseg's app package installs
    the shim, and pydicom-seg then imports. (``pytest.importorskip`` skipped this test when the shim was missing,
    for pydicom-seg's import then fails with the ModuleNotFoundError that importorskip takes for "not installed";
    and in this process a test above has installed the shim already.)"""
    if importlib.util.find_spec("pydicom_seg") is None:
        pytest.skip("pydicom-seg comes with scripts/install-label-server.sh")
    printed = python_output("import pydicom, covseg.apps.monailabel, pydicom_seg\n"
                            "print(pydicom.__version__.split('.')[0], pydicom_seg.MultiClassWriter.__name__)")
    assert printed.split() == ["3", "MultiClassWriter"]


@pytest.fixture
def labelled_phantom(tmp_path):
    ph = make_chest_phantom(shape=(10, 96, 96), spacing=(3.7, 3.7, 5.0), seed=1)
    ct, label = tmp_path / "ct.nii.gz", tmp_path / "label.nii.gz"
    sitk.WriteImage(ph.image(), str(ct))
    sitk.WriteImage(ph.image(ph.infection), str(label))
    return ph, ct, label


def test_training_slices_keep_every_lesion_slice_plus_negatives(labelled_phantom):
    ph, ct, label = labelled_phantom
    items = slices_of_volume(ct, label, image_size=64, negatives_per_positive=1.0, min_negatives=2)
    positives = sum(bool(item["label"].any()) for item in items)
    lesion_slices = int(ph.infection.reshape(ph.infection.shape[0], -1).any(axis=1).sum())
    assert 0 < positives <= lesion_slices
    assert len(items) - positives <= max(positives, 2)
    for item in items:
        assert item["image"].shape == item["label"].shape == (1, 64, 64)
        assert float(item["image"].min()) >= 0.0 and float(item["image"].max()) <= 1.0
        assert set(np.unique(item["label"].numpy())) <= {0.0, 1.0}
    assert len(training_slices([{"image": str(ct), "label": str(label)}] * 2, 64)) == 2 * len(items)


def test_training_slices_refuse_a_label_of_another_size(labelled_phantom, tmp_path):
    ph, ct, _ = labelled_phantom
    wrong = tmp_path / "wrong.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((10, 96, 95), np.uint8)), str(wrong))
    with pytest.raises(CovsegInputError, match="wrong.nii.gz"):
        slices_of_volume(ct, wrong, image_size=64)


def _tiny_bundle(folder):
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "inference.yaml").write_text(
        "covseg:\n  network: tiny\n  image_size: 64\n  out_channels: 1\n"
        "network_def:\n  _target_: torch.nn.Conv2d\n  in_channels: 1\n  out_channels: 1\n  kernel_size: 1\n")
    net = torch.nn.Conv2d(1, 1, 1)
    torch.nn.init.constant_(net.weight, 1.0)
    torch.save({k: v.half() for k, v in net.state_dict().items()}, folder / "models" / "model.pt")
    return folder


def test_infer_uses_published_weights_once_they_exist_and_reloads_them(tmp_path):
    bundle = _tiny_bundle(tmp_path / "bundle")
    published = tmp_path / "app" / "model" / "covseg_infection" / "model.pt"
    cache = ModelCache(bundle, published)
    model, weights, _ = cache.get()
    assert not weights.fine_tuned and weights.path == bundle / "models" / "model.pt"
    assert float(model.network.weight.flatten()[0]) == 1.0 and model.image_size == 64
    assert cache.get()[0] is model  # unchanged weights: not reloaded

    published.parent.mkdir(parents=True)
    tuned = torch.nn.Conv2d(1, 1, 1)
    torch.nn.init.constant_(tuned.weight, 2.5)
    torch.save({"model": tuned.state_dict()}, published)  # MONAI Label's checkpoint layout
    model2, weights2, sha = cache.get()
    assert weights2.fine_tuned and weights2.path == published and len(sha) == 16
    assert float(model2.network.weight.flatten()[0]) == 2.5
    assert resolve_weights(bundle, None).path == bundle / "models" / "model.pt"


def test_load_state_reads_plain_fp16_state_dicts(tmp_path):
    net = torch.nn.Linear(2, 1)
    torch.save({k: (v * 0 + 3).half() for k, v in net.state_dict().items()}, tmp_path / "w.pt")
    load_state(net, tmp_path / "w.pt")
    assert net.weight.dtype == torch.float32 and float(net.weight[0, 0]) == 3.0


def test_label_server_refuses_a_missing_studies_folder(tmp_path, capsys):
    assert main(["label-server", "--studies", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and ("nope" in err or "not installed" in err)


def test_label_server_app_dir_loads_covseg_app_and_a_free_port_binds(tmp_path):
    folder = label_server.prepare_app_dir(str(tmp_path / "app"))
    assert (folder / "main.py").read_text().count("CovsegLabelApp") == 1
    assert label_server.prepare_app_dir(None) == label_server.APP_PACKAGE_DIR
    port = label_server.free_port("127.0.0.1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
    require("monailabel", reason="MONAI Label is not installed: run scripts/install-label-server.sh")
    from monailabel.utils.others.class_utils import get_class_of_subclass_from_file

    app_class = get_class_of_subclass_from_file("main", str(folder / "main.py"), "MONAILabelApp")
    assert app_class is not None and app_class.__name__ == "CovsegLabelApp"


def test_infer_tasks_write_labels_in_the_input_geometry(tmp_path):
    require("monailabel", reason="MONAI Label is not installed: run scripts/install-label-server.sh")
    from covseg.apps.monailabel.infer_tasks import LungInfer, MulticlassInfer

    bundle = _tiny_bundle(tmp_path / "bundle")
    config = bundle / "configs" / "inference.yaml"
    config.write_text(config.read_text().replace("out_channels: 1", "out_channels: 3"))  # 3 classes, 1x1 conv
    net = torch.nn.Conv2d(1, 3, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([-8.0, 4.0, 8.0]).view(3, 1, 1, 1))
        net.bias.copy_(torch.tensor([4.0, 0.0, -4.0]))
    torch.save(net.state_dict(), bundle / "models" / "model.pt")
    ph = make_chest_phantom(shape=(6, 96, 96), spacing=(3.7, 3.7, 5.0), seed=2)
    ct = tmp_path / "ct.nii.gz"
    sitk.WriteImage(ph.image(), str(ct))

    for task, values in ((MulticlassInfer(ModelCache(bundle)), {0, 1, 2}), (LungInfer(), {0, 1, 2})):
        label_file, result = task({"image": str(ct), "bf16": False})
        try:
            label, ref = sitk.ReadImage(label_file), sitk.ReadImage(str(ct))
            assert label.GetSize() == ref.GetSize() and label.GetSpacing() == ref.GetSpacing()
            assert label.GetOrigin() == ref.GetOrigin() and label.GetDirection() == ref.GetDirection()
            array = sitk.GetArrayFromImage(label)
            assert set(np.unique(array).tolist()) <= values
            assert result["voxels"] == {name: int((array == v).sum()) for name, v in task.labels.items()}
            assert sum(result["voxels"].values()) > 0, type(task).__name__
        finally:
            Path(label_file).unlink(missing_ok=True)
    assert result["voxels"]["right lung"] > 0 and result["voxels"]["left lung"] > 0


def test_infection_task_runs_the_requested_backend_with_the_same_mask(tmp_path):
    require("monailabel", reason="MONAI Label is not installed: run scripts/install-label-server.sh")
    require("onnxruntime", reason="onnxruntime is not installed: pip install 'covseg[onnx]'")
    from covseg.apps.monailabel.infer_tasks import InfectionInfer, request_backend

    task = InfectionInfer(ModelCache(_tiny_bundle(tmp_path / "bundle")))
    ph = make_chest_phantom(shape=(6, 96, 96), spacing=(3.7, 3.7, 5.0), seed=2)
    ct = tmp_path / "ct.nii.gz"
    sitk.WriteImage(ph.image(), str(ct))
    masks = {}
    for backend, ran in (("torch", "torch"), ("onnxruntime", "onnxruntime"), (None, "onnxruntime")):
        request = {"image": str(ct), "bf16": False} | ({} if backend is None else {"backend": backend})
        label_file, result = task(request)
        try:  # fp32 on the CPU: auto (no backend given) picks ONNX Runtime, as covseg infer does
            assert result["backend"] == ran and result["precision"] == "fp32", backend
            masks[backend] = sitk.GetArrayFromImage(sitk.ReadImage(label_file))
        finally:
            Path(label_file).unlink(missing_ok=True)
    assert masks["torch"].any()
    assert (masks["torch"] != masks["onnxruntime"]).mean() < 1e-3  # fp32 either way: logits equal to ~1e-6
    assert np.array_equal(masks["onnxruntime"], masks[None])
    with pytest.raises(ValueError, match="backend must be one of auto, torch, onnxruntime, not 'tensorrt'"):
        task({"image": str(ct), "backend": "tensorrt"})
    assert request_backend(" ONNXRuntime", "cpu") == "onnxruntime" and request_backend("", "cuda") == "auto"
    with pytest.raises(ValueError, match="runs on the CPU, not on cuda"):  # (MONAI Label asks for cuda only where
        request_backend("onnxruntime", "cuda")                              # torch sees one)


def _classifier_bundle(folder: Path) -> Path:
    """The jcs_classifier bundle's configs with fresh (untrained) weights."""
    import shutil

    from covseg.networks.classifier import SliceClassifier

    shutil.copytree(Path(__file__).resolve().parents[1] / "bundles" / "jcs_classifier" / "configs", folder / "configs")
    (folder / "models").mkdir()
    torch.manual_seed(0)
    torch.save(SliceClassifier().state_dict(), folder / "models" / "model.pt")
    return folder


def test_diagnosis_task_decides_then_segments_unless_negative(tmp_path):
    require("monailabel", reason="MONAI Label is not installed: run scripts/install-label-server.sh")
    from covseg.apps.monailabel.infer_tasks import DiagnosisInfer

    task = DiagnosisInfer(ModelCache(_tiny_bundle(tmp_path / "seg")), ModelCache(_classifier_bundle(tmp_path / "cls")))
    bundle_settings = yaml.safe_load((tmp_path / "cls" / "configs" / "inference.yaml").read_text())["covseg"]
    shown = task.config()  # what 3D Slicer offers in its options panel: the classifier bundle's thresholds
    for name in ("slice_threshold", "patient_threshold", "min_lung_fraction", "min_lung_area_cm2"):
        assert shown[name] == float(bundle_settings[name]), name
    ph = make_chest_phantom(shape=(6, 96, 96), spacing=(3.7, 3.7, 5.0), seed=2)
    ct = tmp_path / "ct.nii.gz"
    sitk.WriteImage(ph.image(), str(ct))
    decided = {}
    for threshold, decision, backend in ((0.0, "positive", "onnxruntime"), (1.0, "negative", "torch")):
        label_file, result = task({"image": str(ct), "bf16": False, "patient_threshold": threshold,
                                   "slice_threshold": 0.0,
                                   "min_lung_area_cm2": 0, "backend": backend})
        assert result["classifier"]["backend"] == backend  # the classifier scores on the request's backend
        try:
            label, ref = sitk.ReadImage(label_file), sitk.ReadImage(str(ct))
            assert label.GetSize() == ref.GetSize() and label.GetOrigin() == ref.GetOrigin()
            d = result["diagnosis"]
            assert d["decision"] == decision and d["classified_slices"] > 0 and result["classifier"]["precision"]
            decided[decision] = (result["voxels"]["infection"], d["segmented_slices"])
        finally:
            Path(label_file).unlink(missing_ok=True)
    assert decided["positive"][0] > 0 and decided["positive"][1] > 0  # the tiny model marks the dark lung
    assert decided["negative"] == (0, 0)  # a negative patient is not segmented
    with pytest.raises(ValueError, match="slice_threshold must be a number, not 'abc'"):
        task({"image": str(ct), "slice_threshold": "abc"})
    label_file, result = task({"image": str(ct), "bf16": False})  # the bundle's own settings: small phantom lungs
    Path(label_file).unlink()
    assert result["diagnosis"]["decision"] in ("positive", "negative", "indeterminate")


def test_training_slices_skip_an_unreadable_pair_with_a_warning(labelled_phantom, tmp_path, caplog):
    ph, ct, label = labelled_phantom
    wrong = tmp_path / "wrong.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((10, 96, 95), np.uint8)), str(wrong))
    good = training_slices([{"image": str(ct), "label": str(label)}], 64)
    with caplog.at_level("WARNING"):
        items = training_slices([{"image": str(ct), "label": str(wrong)}, {"image": str(ct), "label": str(label)}], 64)
    assert len(items) == len(good) > 0
    assert "skipped for training" in caplog.text and "wrong.nii.gz" in caplog.text and "differs" in caplog.text


@pytest.fixture
def label_app(tmp_path, monkeypatch):
    """covseg's MONAI Label app in this process, on a studies folder holding a phantom CT and a damaged copy."""
    require("monailabel", reason="MONAI Label is not installed: run scripts/install-label-server.sh")
    from monailabel.config import settings

    from covseg.apps.monailabel.main import CovsegLabelApp

    monkeypatch.setattr(settings, "MONAI_LABEL_DATASTORE_AUTO_RELOAD", False)  # no file watcher outliving the test

    studies = tmp_path / "studies"
    studies.mkdir()
    ph = make_chest_phantom(shape=(6, 96, 96), spacing=(3.7, 3.7, 5.0), seed=2)
    sitk.WriteImage(ph.image(), str(studies / "ct.nii.gz"), True)
    data = (studies / "ct.nii.gz").read_bytes()
    (studies / "damaged.nii.gz").write_bytes(data[: len(data) // 2])
    conf = {"infection_bundle": str(_tiny_bundle(tmp_path / "bundle"))}
    return CovsegLabelApp(str(tmp_path / "app"), str(studies), conf), ph, studies


def _http_error(call, *args) -> tuple[int, str]:
    from fastapi import HTTPException

    with pytest.raises(HTTPException) as err:
        call(*args)
    return err.value.status_code, err.value.detail


def test_bad_infer_requests_are_http_errors_naming_the_file(label_app):
    app, _, studies = label_app
    status, detail = _http_error(app.infer, {"model": "nosuch", "image": "ct"})
    assert status == 404 and "unknown model 'nosuch'" in detail and "covseg_lungs" in detail
    status, detail = _http_error(app.infer, {"model": "covseg_lungs", "image": "nosuch"})
    assert status == 404 and "image 'nosuch' not found" in detail
    status, detail = _http_error(app.infer, {"model": "covseg_lungs", "image": "damaged"})
    assert status == 422 and f"{studies / 'damaged.nii.gz'}: truncated file" in detail and "\n" not in detail
    status, detail = _http_error(app.infer, {"model": "covseg_infection", "image": "ct", "backend": "tensorrt"})
    assert status == 400 and "backend must be one of" in detail
    result = app.infer({"model": "covseg_lungs", "image": "ct"})  # still serving
    Path(result["file"]).unlink()
    assert result["params"]["voxels"]["right lung"] > 0


def test_datastore_refuses_uploads_covseg_cannot_use_and_keeps_what_it_had(label_app, tmp_path):
    app, ph, studies = label_app
    store = app.datastore()
    good, wrong, cut = tmp_path / "good.nii.gz", tmp_path / "wrong.nii.gz", tmp_path / "cut.nii.gz"
    sitk.WriteImage(ph.image(ph.infection), str(good), True)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((6, 96, 95), np.uint8)), str(wrong), True)
    cut.write_bytes(good.read_bytes()[:200])
    store.save_label("ct", str(good), "final", {})
    saved = Path(store.get_label_uri("ct", "final"))
    assert saved.read_bytes() == good.read_bytes()
    for label, reason in ((wrong, "differs from the input's"), (cut, "truncated")):
        status, detail = _http_error(store.save_label, "ct", str(label), "final", {})
        assert status == 422 and "image 'ct'" in detail and reason in detail, detail
    assert saved.read_bytes() == good.read_bytes()  # the good label is kept
    for not_a_label, values in ((studies / "ct.nii.gz", "values -"), (tmp_path / "prob.nii.gz", "non-integer values")):
        if not not_a_label.exists():  # a probability map on the CT's grid
            sitk.WriteImage(ph.image(ph.infection.astype(np.float32) * 0.7), str(not_a_label), True)
        status, detail = _http_error(store.save_label, "ct", str(not_a_label), "final", {})
        assert status == 422 and f"not a label map: {values}" in detail, detail
    assert saved.read_bytes() == good.read_bytes()
    status, detail = _http_error(store.save_label, "nosuch", str(good), "final", {})
    assert status == 404 and "'nosuch'" in detail
    status, detail = _http_error(store.save_label, "damaged", str(good), "final", {})
    assert status == 422 and "damaged.nii.gz: truncated" in detail
    status, detail = _http_error(store.add_image, "ct", str(cut), {})  # would replace the good CT
    assert status == 422 and "image 'ct'" in detail
    assert (studies / "ct.nii.gz").stat().st_size > 1000 and sorted(store.list_images()) == ["ct", "damaged"]


def test_segment_names_say_which_label_values_are_infection():
    from covseg.apps.monailabel.label_names import infection_values

    slicer = [{"name": "right lung", "idx": 1}, {"name": "left lung", "idx": 2}, {"name": "Infection", "idx": 3}]
    assert infection_values({"label_info": slicer}) == (3,)
    classes = [{"name": "ground-glass opacity", "idx": 1}, {"name": "consolidation", "idx": 2},
               {"name": "left lung", "idx": 3}]
    assert infection_values({"label_info": classes}) == (1, 2)
    unknown = [{"name": "Segment_1", "idx": 1}, {"name": "lungs", "idx": 2}, {"name": "Segment_3", "idx": 3}]
    assert infection_values({"label_info": unknown}) == (1, 3)  # unknown names stay infection, lungs never
    assert infection_values({"label_info": [{"name": "lung", "idx": 1}]}) == ()
    for no_names in (None, {}, {"label_info": "infection"}, {"label_info": [{"name": "infection"}]},
                     {"label_info": [{"name": "infection", "idx": True}]}):
        assert infection_values(no_names) is None


def test_training_leaves_out_submitted_lung_segments(label_app, tmp_path, caplog):
    """A reader corrects covseg_lungs' and covseg_infection's output in Slicer and submits both: the label map holds
    1 right lung, 2 left lung, 3 infection, named in ``label_info``; only 3 is trained as infection."""
    app, ph, _ = label_app
    store = app.datastore()
    combined = np.where(ph.infection > 0, 3, ph.lung_labels).astype(np.uint8)
    submitted, infection_only = tmp_path / "submitted.nii.gz", tmp_path / "infection.nii.gz"
    sitk.WriteImage(ph.image(combined), str(submitted), True)
    sitk.WriteImage(ph.image(ph.infection), str(infection_only), True)
    names = [{"name": "right lung", "idx": 1}, {"name": "left lung", "idx": 2}, {"name": "infection", "idx": 3}]
    store.save_label("ct", str(submitted), "final", {"label_info": names})
    pairs = store.datalist()
    assert [pair.get("infection_values") for pair in pairs] == [(3,)]
    with caplog.at_level("INFO", logger="covseg.apps.monailabel.training_slices"):  # the CLI sets covseg's to WARNING
        items = training_slices(pairs, 64)
    expected = training_slices([{"image": pairs[0]["image"], "label": str(infection_only)}], 64)
    assert len(items) == len(expected) > 0
    for got, want in zip(items, expected):
        assert torch.equal(got["label"], want["label"])
    assert "3 taken as infection by their segment names; 1, 2 left out" in caplog.text
    store.save_label("ct", str(submitted), "final", {})  # no names (a script's upload): every non-zero value
    caplog.clear()
    with caplog.at_level("WARNING"):
        unnamed = training_slices(store.datalist(), 64)
    assert "label values 1, 2, 3 and no segment names" in caplog.text
    assert sum(item["label"].sum() for item in unnamed) > sum(item["label"].sum() for item in items)


def test_a_volume_without_lungs_is_answered_with_covseg_infers_warning(tmp_path):
    require("monailabel", reason="MONAI Label is not installed: run scripts/install-label-server.sh")
    from covseg.apps.monailabel.infer_tasks import InfectionInfer, LungInfer

    ph = make_chest_phantom(shape=(6, 96, 96), spacing=(3.7, 3.7, 5.0), seed=2)
    chest, belly = tmp_path / "chest.nii.gz", tmp_path / "belly.nii.gz"
    sitk.WriteImage(ph.image(), str(chest))
    body = np.full(ph.hu.shape, -1000, np.int16)
    body[:, 10:86, 10:86] = 40  # soft tissue only: an abdomen below the lungs
    sitk.WriteImage(ph.image(body), str(belly))
    for task in (LungInfer(), InfectionInfer(ModelCache(_tiny_bundle(tmp_path / "bundle")))):
        for ct, lungless in ((belly, True), (chest, False)):
            label_file, result = task({"image": str(ct), "bf16": False, "backend": "torch"})
            Path(label_file).unlink()
            no_lung = [w for w in result["warnings"] if w.startswith("no lung found")]
            assert bool(no_lung) == lungless, (type(task).__name__, ct.name, result["warnings"])


class _Started(Exception):
    """Raised instead of starting the server."""


def test_label_server_warns_when_the_studies_hold_no_volume_it_lists(tmp_path, capsys, monkeypatch):
    require("monailabel", reason="MONAI Label is not installed: run scripts/install-label-server.sh")

    def no_server(*args, **kwargs):
        raise _Started

    monkeypatch.setattr(label_server.subprocess, "Popen", no_server)
    studies = tmp_path / "studies"
    (studies / "patient1").mkdir(parents=True)  # a DICOM series folder: MONAI Label's datastore does not list it
    (studies / "patient1" / "IMG0001.dcm").write_bytes(b"")
    args = ["label-server", "--studies", str(studies), "--app-dir", str(tmp_path / "app")]
    with pytest.raises(_Started):
        main(args)
    err = capsys.readouterr().err
    assert "warning:" in err and "no .nii.gz, .nii or .nrrd volume" in err and "patient1/" in err
    (studies / "ct.nii.gz").write_bytes(b"")
    with pytest.raises(_Started):
        main(args)
    assert "warning" not in capsys.readouterr().err
    assert main(["label-server", "--studies", str(studies / "ct.nii.gz")]) == 2
    assert "ct.nii.gz: is not a folder" in capsys.readouterr().err


def test_a_training_that_cannot_start_is_one_error_line(label_app, tmp_path):
    import subprocess
    import sys

    app, _, studies = label_app
    status, detail = _http_error(app.bundle_path, "nosuch")  # asked in the server before a train subprocess starts
    assert status == 404 and "unknown model 'nosuch'" in detail and "covseg_infection" in detail
    assert app.bundle_path("covseg_infection") is None
    status, detail = _http_error(app.train, {"model": "covseg_infection", "max_epochs": "abc"})
    assert status == 400 and "max_epochs must be an integer >= 1, not 'abc'" in detail
    status, detail = _http_error(app.train, {"model": "covseg_infection"})
    assert status == 400 and "no labelled volume" in detail
    # MONAI Label's own train subprocess, as POST /train/ starts it: its last output line is GET /train/'s message
    app_dir = label_server.prepare_app_dir(str(tmp_path / "app"))
    env = dict(os.environ, MONAI_LABEL_DATASTORE_AUTO_RELOAD="false",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-m", "monailabel.interfaces.utils.app", "-m", "train", "-a", str(app_dir),
                          "-s", str(studies), "-r", '{"model": "covseg_infection", "max_epochs": 0}'],
                         capture_output=True, text=True, env=env, timeout=300)
    output = (run.stdout + run.stderr).strip()
    assert run.returncode == 1 and "Traceback" not in output, output[-2000:]
    assert output.splitlines()[-1].endswith("train covseg_infection: max_epochs must be an integer >= 1, not 0")


def test_label_server_refuses_a_read_only_studies_folder_in_one_line(tmp_path):
    import shutil
    import subprocess
    import sys

    studies = tmp_path / "studies"
    studies.mkdir()
    studies.chmod(0o555)
    code = ("import sys\nsys.modules.setdefault('monailabel', sys)  # the check comes first; no server starts\n"
            "from covseg.cli.main import main\n"
            f"sys.exit(main(['label-server', '--studies', {str(studies)!r}, '--app-dir', {str(tmp_path / 'app')!r}, "
            "'--port', '99999']))")  # a usage error after the studies check: never a server, fix or not
    cmd = [sys.executable, "-c", code]
    if os.geteuid() == 0:  # root writes anyway unless it drops CAP_DAC_OVERRIDE
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: a read-only folder cannot be tested honestly")
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
               "--inh-caps=-dac_override,-dac_read_search", *cmd]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    if "setpriv" in proc.stderr and "Operation not permitted" in proc.stderr:
        pytest.skip(f"setpriv cannot drop capabilities here: {proc.stderr.strip()}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        f"error: {studies}: studies folder is not writable (the datastore keeps datastore_v2.json, .lock and labels/ "
        "there); give a writable folder, e.g. a copy of the volumes"]
