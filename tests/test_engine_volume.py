"""Volume inference on a small generated phantom with tiny networks: geometry, skipped slices, classes, gate."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from ignite.handlers import ProgressBar, Timer
from torch import nn
from utils import TINY_UNET

from covseg.engines.inference import outputs as outputs_mod
from covseg.engines.inference.batch import run_batch
from covseg.engines.inference.export import export_volume
from covseg.engines.inference.predictor import SlicePredictor
from covseg.engines.inference.volume import InfectionPostprocessing, infer_volume
from covseg.engines.inference.volume_step import prepare_volume, process_volume
from covseg.io.read import CTVolume, read_volume
from covseg.networks.registry import get_network
from covseg.synthetic.phantom import make_chest_phantom
from covseg.synthetic.phantom_nifti import write_phantom

SHAPE, SPACING = (16, 64, 64), (5.6, 5.6, 10.0)


class Constant(nn.Module):
    """Logits equal to ``values`` (one per channel) everywhere."""

    def __init__(self, *values: float) -> None:
        super().__init__()
        self.register_buffer("values", torch.tensor(values, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.values.view(1, -1, 1, 1).expand(x.shape[0], -1, *x.shape[-2:]).clone()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def phantom():
    return make_chest_phantom(shape=SHAPE, spacing=SPACING, seed=1)


@pytest.fixture(scope="module")
def ct_ras(tmp_path_factory, phantom) -> Path:
    """The phantom stored RAS (not LPS), so that the writer has to undo a re-orientation."""
    folder = tmp_path_factory.mktemp("in")
    return write_phantom(folder / "chest.nii.gz", phantom, orientation="RAS")["ct"]


def _predictor(net: nn.Module, size: int | None = 32) -> SlicePredictor:
    return SlicePredictor(net, image_size=size, batch_size=4, bf16=False)


def test_outputs_overlay_the_input_and_skip_slices_without_lung(tmp_path, ct_ras):
    net = get_network("unet", features=TINY_UNET)
    results = run_batch([ct_ras], tmp_path, net, image_size=32, batch_size=4, bf16=False, save_prob=True)
    assert [r.status for r in results] == ["ok"]
    out = tmp_path / "chest"
    names = {p.name for p in out.iterdir()}
    assert names == {"infection_mask.nii.gz", "lung_mask.nii.gz", "infection_prob.nii.gz", "report.json",
                     "slices.csv"}
    ref = nib.load(str(ct_ras))
    for name in ("infection_mask", "lung_mask", "infection_prob"):
        img = nib.load(str(out / f"{name}.nii.gz"))
        assert img.shape == ref.shape
        np.testing.assert_allclose(img.affine, ref.affine, atol=1e-5)
        assert img.get_data_dtype() == np.uint8
    # slices without lung: empty and not predicted (z is the LPS slice index = RAS index, superior up both)
    vol = read_volume(ct_ras)
    lung = np.asarray(nib.load(str(out / "lung_mask.nii.gz")).dataobj)
    inf = np.asarray(nib.load(str(out / "infection_mask.nii.gz")).dataobj)
    prob = np.asarray(nib.load(str(out / "infection_prob.nii.gz")).dataobj)
    assert set(np.unique(lung)) <= {0, 1, 2} and lung.any()
    no_lung = ~lung.any(axis=(0, 1))  # nibabel array is [x, y, z]
    assert no_lung.any()
    assert not inf[..., no_lung].any() and not prob[..., no_lung].any()
    rows = list(csv.DictReader((out / "slices.csv").read_text().splitlines()))
    assert len(rows) == vol.array.shape[0]
    for z, row in enumerate(rows):
        assert (row["predicted"] == "1") == (not no_lung[z])
        assert int(row["lung_px"]) == int((lung[..., z] > 0).sum())
        assert int(row["infection_px"]) == int(inf[..., z].sum())
    report = json.loads((out / "report.json").read_text())
    assert report["lung_slices"] == report["predicted_slices"] == int((~no_lung).sum())
    voxel_ml = float(np.prod(SPACING)) / 1000
    assert report["lung_ml"] == pytest.approx((lung > 0).sum() * voxel_ml, abs=1e-2)
    assert report["right_lung_ml"] == pytest.approx((lung == 1).sum() * voxel_ml, abs=1e-2)


def test_infection_is_threshold_within_lung(phantom):
    vol = phantom.as_volume()
    on = infer_volume(vol, _predictor(Constant(3.0)), lung_margin_mm=0.0)
    np.testing.assert_array_equal(on.infection, (on.lung > 0).astype(np.uint8))
    assert on.classes is None and on.n_classes == 1
    off = infer_volume(vol, _predictor(Constant(-3.0)), lung=on.lung)
    assert not off.infection.any()
    # a margin lets infection reach just outside the lung mask, never into lung-free slices
    wide = infer_volume(vol, _predictor(Constant(3.0)), lung=on.lung, lung_margin_mm=12.0)
    assert wide.infection.sum() > on.infection.sum()
    assert not wide.infection[~on.lung.any(axis=(1, 2))].any()


def test_lung_margin_is_in_mm_along_each_axis_of_non_square_pixels():
    """0.5 mm columns, 2 mm rows: the 5 mm margin is 10 columns but only 2-3 rows (it was 10 rows, 20 mm)."""
    lung = np.zeros((1, 60, 60), np.uint8)
    lung[0, 20:40, 20:40] = 1
    prob = np.ones(lung.shape, np.float32)
    mask, _ = InfectionPostprocessing(0.5, 5.0)(prob, lung, (0.5, 2.0, 1.0))
    rows, cols = np.nonzero(mask[0])
    assert (rows.min(), rows.max()) == (20 - 2, 39 + 2)
    assert (cols.min(), cols.max()) == (20 - 10, 39 + 10)


def test_multiclass_label_map(tmp_path, phantom):
    vol = phantom.as_volume("mc")
    res = infer_volume(vol, _predictor(Constant(0.0, 1.0, 4.0)), lung_margin_mm=0.0)
    assert res.n_classes == 3
    np.testing.assert_array_equal(res.classes, 2 * (res.lung > 0))  # class 2 wins, only inside the infection
    net = get_network("unet", features=TINY_UNET, out_channels=3)
    results = run_batch([], tmp_path, net)  # empty batch is fine
    assert results == []
    export_volume(prepare_volume(vol, _predictor(net), tmp_path, model_info={"name": "tiny3"}))
    labels = np.asarray(nib.load(str(tmp_path / "mc" / "infection_labels.nii.gz")).dataobj)
    inf = np.asarray(nib.load(str(tmp_path / "mc" / "infection_mask.nii.gz")).dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2}
    np.testing.assert_array_equal(labels > 0, inf > 0)
    report = json.loads((tmp_path / "mc" / "report.json").read_text())
    assert set(report["class_ml"]) == {"1", "2"}
    assert sum(report["class_ml"].values()) == pytest.approx(report["infection_ml"], abs=1e-2)


def test_volume_without_lung(tmp_path):
    hu = np.full((6, 48, 48), -1000.0, np.float32)
    yy, xx = np.mgrid[:48, :48]
    hu[:, (yy - 24) ** 2 + (xx - 24) ** 2 < 18 ** 2] = 40.0  # a body of soft tissue, no lungs
    vol = CTVolume.from_array(hu, (6.0, 6.0, 8.0), name="nolung")
    ran = []
    res = infer_volume(vol, _predictor(Constant(3.0)), handlers=[lambda e: ran.append(e)])
    assert not res.lung.any() and not res.infection.any() and not res.predicted.any() and len(ran) == 1
    report = process_volume(vol, _predictor(Constant(3.0)), tmp_path)
    assert report.warnings[0].startswith("no lung found") and report.lung_slices == 0
    assert (tmp_path / "nolung" / "infection_mask.nii.gz").exists()


def test_gate_and_handlers(phantom):
    vol = phantom.as_volume()
    lung = infer_volume(vol, _predictor(Constant(3.0))).lung
    lung_z = np.nonzero(lung.any(axis=(1, 2)))[0]
    seen: list[int] = []

    def every_other(crops):
        assert all(c.dtype == np.float32 and c.min() >= 0.0 and c.max() <= 1.0 for c in crops)
        seen.extend(c.shape for c in crops)
        return [i % 2 == 0 for i in range(len(crops))]

    iterations = []

    def count(engine):
        engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: iterations.append(e.state.output))

    res = infer_volume(vol, _predictor(Constant(3.0)), lung=lung, gate=every_other, handlers=[count],
                       lung_margin_mm=0.0)
    assert len(seen) == len(lung_z)
    ungated = infer_volume(vol, _predictor(Constant(3.0)), lung=lung)
    assert res.timing_s["gate"] >= 0.0 and "gate" not in ungated.timing_s
    kept = res.predicted.nonzero()[0]
    assert 0 < len(kept) < len(lung_z) and set(kept) <= set(lung_z)
    assert sum(iterations) == len(kept) and len(iterations) == -(-len(lung_z) // 4)
    for z in lung_z:
        assert res.infection[z].any() == (z in kept)
    timer = Timer()

    def ignite_handlers(engine):
        ProgressBar(persist=False, disable=True).attach(engine)
        timer.attach(engine, start=Events.STARTED, pause=Events.COMPLETED)

    none = infer_volume(vol, _predictor(Constant(3.0)), lung=lung, gate=lambda crops: [False] * len(crops),
                        handlers=[ignite_handlers])
    assert timer.value() > 0
    assert not none.infection.any() and not none.predicted.any()


def test_batch_goes_on_and_leaves_no_partial_folder(tmp_path, ct_ras, monkeypatch):
    bad = tmp_path / "empty.nii.gz"
    bad.write_bytes(b"")
    out = tmp_path / "out"
    net = Constant(-3.0)
    seen = []
    results = run_batch([bad, ct_ras], out, net, image_size=16, on_result=seen.append)
    assert [r.status for r in results] == ["error", "ok"] and [r.name for r in seen] == ["empty", "chest"]
    assert results[0].error.startswith(str(bad)) and "empty" in results[0].error
    assert sorted(p.name for p in out.iterdir()) == [".covseg.lock", "chest"]

    # a failure while writing: the volume is an error and its folder is not left behind
    calls = {"n": 0}
    real = outputs_mod.write_volume_like

    def flaky(array, vol, path, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(array, vol, path, *a, **k)

    monkeypatch.setattr(outputs_mod, "write_volume_like", flaky)
    out2 = tmp_path / "out2"
    results = run_batch([ct_ras], out2, net, image_size=16)
    assert results[0].status == "error" and "disk full" in results[0].error
    assert [p.name for p in out2.iterdir()] == [".covseg.lock"]

    # a re-run replaces the previous folder as a whole
    monkeypatch.setattr(outputs_mod, "write_volume_like", real)
    (out / "chest" / "stale.txt").write_text("old")
    results = run_batch([ct_ras], out, net, image_size=16)
    assert results[0].ok and not (out / "chest" / "stale.txt").exists()
    assert sorted(p.name for p in out.iterdir()) == [".covseg.lock", "chest"]


def test_labels_give_scores(tmp_path, phantom):
    ct = write_phantom(tmp_path / "in" / "case.nii.gz", phantom, orientation="RAS")["ct"]  # label stored RAS too
    labels = tmp_path / "labels"
    labels.mkdir()
    (tmp_path / "in" / "case_infection.nii.gz").rename(labels / "case.nii.gz")
    results = run_batch([ct], tmp_path / "out", Constant(3.0), labels_dir=labels, image_size=16,
                        lung_margin_mm=0.0)
    rep = results[0].report
    assert rep.label == str(labels / "case.nii.gz")
    # everything in the lung is called infection: the scores are those of the lung mask against the lesions
    lung = np.asarray(nib.load(str(tmp_path / "out" / "case" / "lung_mask.nii.gz")).dataobj) > 0
    gt = np.asarray(nib.load(str(labels / "case.nii.gz")).dataobj) > 0
    tp = int((lung & gt).sum())
    assert tp > 0.9 * gt.sum()
    assert rep.metrics["sensitivity"] == pytest.approx(tp / gt.sum(), abs=1e-6)
    assert rep.metrics["precision"] == pytest.approx(tp / lung.sum(), abs=1e-6)
    assert rep.metrics["dice"] == pytest.approx(2 * tp / (lung.sum() + gt.sum()), abs=1e-6)
    missing = run_batch([ct], tmp_path / "out", Constant(3.0), labels_dir=tmp_path, image_size=16)
    assert missing[0].report.metrics is None
    assert any(w.startswith("no label") for w in missing[0].report.warnings)


def test_dataset_prefetch_reads_once_and_preprocessing_carries_the_lung(ct_ras):
    from covseg.engines.inference.dataset import VolumeDataset, VolumePreprocessing

    calls = []
    preprocessing = VolumePreprocessing()

    def counting(source):
        calls.append(source.name)
        return preprocessing(source)

    dataset = VolumeDataset([ct_ras], counting)
    dataset.prefetch(0)
    dataset.prefetch(0)  # already under way: not started twice
    item = dataset[0]
    assert calls == ["chest"] and item.volume.name == "chest"
    assert item.lung is not None and item.lung.shape == item.volume.array.shape and item.lung.any()
    assert set(item.timing_s) == {"read", "lung_mask"}
    assert dataset[0] is not item and calls == ["chest", "chest"]  # a prefetched item is handed out once
    dataset.prefetch(5)  # out of range: nothing
    assert len(dataset) == 1


def test_dataset_adopts_an_equal_datasets_prefetch_only(ct_ras):
    from covseg.engines.inference.dataset import VolumeDataset, VolumePreprocessing

    calls = []

    class Counting(VolumePreprocessing):
        def __call__(self, source):
            calls.append(source.name)
            return super().__call__(source)

    early = VolumeDataset([ct_ras], Counting())
    early.prefetch(0)
    same = VolumeDataset(early.data, Counting())  # what the config builds: the same sources, an equal transform
    assert same.adopt(early)
    assert same[0].volume.name == "chest" and calls == ["chest"]  # the early item, not read again
    other = VolumeDataset(early.data, Counting(lung=False))
    early.prefetch(0)
    assert not other.adopt(early)  # another preprocessing: its own item
    assert other[0].lung is None and early[0].lung is not None and calls == ["chest"] * 3


def test_dataset_prefetch_in_a_child_process_gives_the_same_item_and_the_real_error(ct_ras, tmp_path):
    import glob

    from covseg.engines.inference.dataset import VolumeDataset
    from covseg.io.errors import CovsegInputError

    own = f"/dev/shm/covseg-item-{os.getpid()}-*"  # this process's folders only: other runs may share /dev/shm
    before = set(glob.glob(own))
    dataset = VolumeDataset([ct_ras])
    dataset.prefetch(0, process=True)
    item, again = dataset[0], dataset[0]  # the child's item, then one computed here
    np.testing.assert_array_equal(item.volume.array, again.volume.array)
    np.testing.assert_array_equal(item.lung, again.lung)
    assert item.volume.reference == again.volume.reference and item.volume.name == again.volume.name
    assert set(item.timing_s) == {"read", "lung_mask"}
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    bad = VolumeDataset([empty])
    bad.prefetch(0, process=True)
    with pytest.raises(CovsegInputError, match="empty") as info:
        bad[0]
    assert info.value.path == str(empty)  # computed again here: the real error, not a copy
    assert set(glob.glob(own)) <= before  # nothing left behind


def test_dataset_imports_neither_torch_nor_monai_and_reading_imports_nothing(ct_ras):
    """The CLI reads its first volume in a thread while the main thread imports torch and MONAI: that thread must
    import nothing (MONAI's package import breaks when another thread imports it at the same time)."""
    import subprocess
    import sys

    code = ("import sys; from covseg.engines.inference.dataset import VolumePreprocessing; "
            "assert not {'torch', 'monai'} & set(sys.modules), sorted({'torch', 'monai'} & set(sys.modules)); "
            "before = set(sys.modules); item = VolumePreprocessing()(sys.argv[1]); assert item.lung.any(); "
            "new = sorted(set(sys.modules) - before); assert not new, new")
    done = subprocess.run([sys.executable, "-c", code, str(ct_ras)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]


def test_dataset_prefetch_delivers_errors_to_the_reader(tmp_path):
    from covseg.engines.inference.dataset import VolumeDataset
    from covseg.io.errors import CovsegInputError

    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    dataset = VolumeDataset([empty])
    dataset.prefetch(0)
    with pytest.raises(CovsegInputError, match="empty"):
        dataset[0]


def test_pictures_started_with_the_inference_equal_those_drawn_at_export(tmp_path, phantom):
    """``prepare_volume(pictures=True)`` draws the pictures while the report is built; the files written are the
    same bytes as when they are drawn at export."""
    vol = phantom.as_volume("pics")
    predictor = _predictor(Constant(2.0))
    early = prepare_volume(vol, predictor, tmp_path / "early", pictures=True)
    late = prepare_volume(vol, predictor, tmp_path / "late")
    assert early.pictures is not None and late.pictures is None
    assert set(early.pictures.result()) == {"montage.png", "reformats.png", "infection_curve.png"}
    options = outputs_mod.ExportOptions(figures=True)
    for item in (early, late):
        export_volume(item, options)
    for name in ("montage.png", "reformats.png", "infection_curve.png"):
        assert (tmp_path / "early" / "pics" / name).read_bytes() == (tmp_path / "late" / "pics" / name).read_bytes()
    report = json.loads((tmp_path / "early" / "pics" / "report.json").read_text())
    assert report["outputs"]["curve"] == "infection_curve.png" and report["outputs"]["reformats"] == "reformats.png"


def test_labels_of_nnunet_named_images_are_found(tmp_path, phantom):
    """nnU-Net names an image ``<case>_0000`` (its first channel) and its label ``<case>``."""
    ct = write_phantom(tmp_path / "in" / "case_0000.nii.gz", phantom)["ct"]
    labels = tmp_path / "labels"
    labels.mkdir()
    (tmp_path / "in" / "case_0000_infection.nii.gz").rename(labels / "case.nii.gz")
    results = run_batch([ct], tmp_path / "out", Constant(3.0), labels_dir=labels, image_size=16)
    assert results[0].report.label == str(labels / "case.nii.gz") and results[0].report.metrics is not None
