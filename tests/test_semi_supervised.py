"""Semi-Inf-Net's randomly selected propagation: pseudo labels, rounds, resume, and the bundle's configs."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from utils import INFNET_BUNDLE, INFNET_TRAIN, TINY_RUN, bright_square_slices, bundle_cmd, run_ok

from covseg.engines.inference.predictor import SlicePredictor
from covseg.engines.training.semi_supervised import run_propagation, write_pseudo_labels
from covseg.io.slices import pseudo_labelled_items, unlabelled_items
from covseg.transforms.load import LoadGreySliced


class BrightIsInfected(nn.Module):
    """A fixed 'network': logit = 20 * (grey - 0.5), so the pseudo label is exactly grey > 0.5."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(20.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (x - 0.5)


def _predictor(network: nn.Module) -> SlicePredictor:
    return SlicePredictor(network, image_size=None, batch_size=2, channels_last=False)


def test_pseudo_labels_are_the_thresholded_prediction_at_the_slice_size(tmp_path):
    items = bright_square_slices(tmp_path / "pool", 3)
    done = write_pseudo_labels(_predictor(BrightIsInfected()), items, tmp_path / "labels")
    assert [it["name"] for it in done] == ["s0", "s1", "s2"]
    for item in done:
        label = np.asarray(Image.open(item["label"]))
        grey = np.asarray(Image.open(item["image"]))
        assert label.shape == grey.shape and set(np.unique(label)) == {0, 255}
        np.testing.assert_array_equal(label == 255, grey > 127)


def test_soft_pseudo_labels_are_the_probability_and_stay_soft_through_training_transforms(tmp_path):
    from covseg.engines.training.train_step import resize_masks
    from covseg.transforms.augment import train_transforms

    class HalfSure(nn.Module):  # logit = 2 * (grey - 0.5): probabilities well inside (0, 1)
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2.0 * (x - 0.5)

    items = bright_square_slices(tmp_path / "pool", 1)
    item = write_pseudo_labels(_predictor(HalfSure()), items, tmp_path / "labels", threshold=None)[0]
    label = np.asarray(Image.open(item["label"])).astype(np.float64) / 255
    grey = np.asarray(Image.open(item["image"])).astype(np.float64) / 255
    np.testing.assert_allclose(label, 1 / (1 + np.exp(-2 * (grey - 0.5))), atol=1 / 255)
    assert ((label > 0.05) & (label < 0.95)).all()

    soft = train_transforms(48, soft_labels=True)({"image": item["image"], "label": item["label"]})["label"]
    hard = train_transforms(48)({"image": item["image"], "label": item["label"]})["label"]
    assert set(np.unique(np.asarray(hard))) <= {0.0, 1.0}
    assert ((np.asarray(soft) > 0.05) & (np.asarray(soft) < 0.95)).any()  # not thresholded at load
    masks = torch.stack([torch.as_tensor(np.asarray(soft)), torch.as_tensor(np.asarray(hard))]).float()
    resized = resize_masks(masks, 32)
    assert ((resized[0] > 0.05) & (resized[0] < 0.95)).any()  # the soft label stays soft at another training scale
    assert set(torch.unique(resized[1]).tolist()) <= {0.0, 1.0}  # a binary one stays binary
    square = np.zeros((1, 48, 48), np.float32)
    square[:, 12:36, 12:36] = 1
    for seed in range(6):  # several draws, so the rotations and zooms of the affine are among them
        chain = train_transforms(48, soft_labels=True).set_random_state(seed)
        labelled = chain({"image": item["image"], "label": square})["label"]
        assert set(np.unique(np.asarray(labelled))) <= {0.0, 1.0}  # a labelled mask beside soft labels stays binary


def test_existing_pseudo_labels_are_kept_and_unreadable_slices_skipped(tmp_path, caplog):
    items = bright_square_slices(tmp_path / "pool", 2)
    labels = tmp_path / "labels"
    labels.mkdir()
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(labels / "s0.png")  # labelled in an earlier round
    broken = tmp_path / "pool" / "broken.png"
    broken.write_bytes(b"not an image")
    with caplog.at_level(logging.WARNING):
        done = write_pseudo_labels(_predictor(BrightIsInfected()), [*items, {"name": "broken", "image": str(broken)}],
                                   labels)
    assert sorted(it["name"] for it in done) == ["s0", "s1"]
    assert np.asarray(Image.open(labels / "s0.png")).max() == 0  # not re-predicted
    assert not (labels / "broken.png").exists()
    assert any("broken.png" in r.getMessage() for r in caplog.records)


def test_load_grey_sliced_reads_paths_and_binarises_labels(tmp_path):
    item = bright_square_slices(tmp_path, 1)[0]
    loaded = LoadGreySliced(keys=("image", "label"))({"image": item["image"], "label": item["image"]})
    assert loaded["image"].shape == (1, 48, 48) and loaded["image"].dtype == np.float32
    assert set(np.unique(loaded["label"])) == {0.0, 1.0}
    array = np.ones((1, 4, 4), np.float32)
    assert LoadGreySliced(keys="image")({"image": array})["image"] is array  # arrays pass through


def test_propagation_labels_the_whole_pool_round_by_round_and_resumes(tmp_path, one_torch_thread):
    pool = bright_square_slices(tmp_path / "pool", 5)
    grey = np.full((48, 48), 0.15, np.float32)
    grey[10:30, 10:30] = 0.85
    labelled = [{"name": "l0", "image": grey[None], "label": (grey > 0.5).astype(np.float32)[None]}]
    network = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))
    before = [p.detach().clone() for p in network.parameters()]
    out = tmp_path / "run"
    final = run_propagation(network, labelled, pool, out, per_round=2, samples_per_round=3, val_items=labelled,
                            image_size=32, batch_size=2, lr=1e-2, seed=0)
    assert final == out / "model_final.pt" and final.exists()
    assert sorted(p.name for p in out.glob("round_*")) == ["round_001", "round_002", "round_003"]  # 2 + 2 + 1
    assert len(list((out / "pseudo_labels").glob("*.png"))) == 5
    assert not list(out.glob("round_*/checkpoint_*.pt"))  # finished rounds keep only their weights
    assert any(not torch.equal(a, b) for a, b in zip(before, network.parameters()))
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "pseudo_labels").glob("*.png")}
    rounds = {p.name: p.stat().st_mtime_ns for p in out.glob("round_*/model_final.pt")}
    run_propagation(network, labelled, pool, out, per_round=2, samples_per_round=3, image_size=32, batch_size=2)
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (out / "pseudo_labels").glob("*.png")}
    assert rounds == {p.name: p.stat().st_mtime_ns for p in out.glob("round_*/model_final.pt")}


def test_propagation_rejects_an_empty_plan(tmp_path):
    with pytest.raises(ValueError, match="per_round"):
        run_propagation(nn.Conv2d(1, 1, 1), [], [], tmp_path, per_round=0)
    with pytest.raises(ValueError, match="no round"):
        run_propagation(nn.Conv2d(1, 1, 1), [], [], tmp_path)


@pytest.mark.slow
def test_semi_bundle_propagates_then_training_uses_the_pseudo_labels(semiseg_dir, tmp_path):
    run = tmp_path / "semi"
    semi = str(INFNET_BUNDLE / "configs" / "semi.yaml")
    proc = run_ok(bundle_cmd("propagation", semi, "--dataset_dir", str(semiseg_dir), "--output_dir", str(run),
                             "--unlabelled_limit", "3", "--per_round", "2", "--samples_per_round", "2", *TINY_RUN))
    assert "round 2/2: training set 6 slices" in proc.stdout  # 3 labelled (4 minus 1 for validation) + 3 pseudo
    labels = pseudo_labelled_items(unlabelled_items(semiseg_dir, 3), run / "pseudo_labels")
    assert len(labels) == 3 and (run / "model_final.pt").exists()
    fine_tune = {"pseudo_label_dir": str(run / "pseudo_labels"), "init_weights": str(run / "model_final.pt")}
    proc = run_ok(bundle_cmd("training", "train.yaml", "--dataset_dir", str(semiseg_dir), "--output_dir",
                             str(tmp_path / "ft"), "--max_epochs", "1",
                             *(arg for key, value in fine_tune.items() for arg in (f"--{key}", value)), *TINY_RUN))
    assert "epoch 1/1" in proc.stdout
    assert (tmp_path / "ft" / "model_final.pt").exists()
    # what that run trained on and started from: the 3 labelled slices, then the 3 pseudo-labelled ones, and the
    # propagation's weights (a run that ignored either option would pass the lines above)
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(INFNET_TRAIN)
    parser.update({"bundle_root": str(INFNET_BUNDLE), "dataset_dir": str(semiseg_dir), "train_limit": 4,
                   "image_size": 64, "output_dir": str(tmp_path / "ft"), **fine_tune})
    data = parser.get_parsed_content("train#dataset").data
    assert len(data) == 3 + 3 and all(str(run / "pseudo_labels") in str(it["label"]) for it in data[3:])
    started = parser.get_parsed_content("network_init").state_dict()
    for key, value in torch.load(run / "model_final.pt", weights_only=True).items():
        assert torch.equal(started[key], value.to(started[key].dtype)), key


def test_unlabelled_slices_with_their_own_window_are_labelled_and_trained_in_the_semiseg_window(tmp_path):
    from covseg.transforms.augment import train_transforms
    from covseg.transforms.intensity import SEMISEG_CORONACASES_WINDOW, window_hu

    folder = tmp_path / "train" / "unlabeled" / "images"
    folder.mkdir(parents=True)
    hu = np.tile(np.linspace(-1000.0, 200.0, 48, dtype=np.float32), (40, 1))  # -1000 .. 200 HU left to right
    Image.fromarray(np.round(window_hu(hu, *SEMISEG_CORONACASES_WINDOW) * 255).astype(np.uint8)).save(
        folder / "Data-1_coronacases_org_001_7.png")
    as_stored = unlabelled_items(tmp_path)
    shown = unlabelled_items(tmp_path, rewindowed=True)
    assert "window" not in as_stored[0] and shown[0]["window"] == SEMISEG_CORONACASES_WINDOW
    # grey > 0.5 means HU > 330 as stored (nothing here) but HU > -430 in the SemiSeg window
    stored_label = write_pseudo_labels(_predictor(BrightIsInfected()), as_stored, tmp_path / "a")[0]["label"]
    shown_label = write_pseudo_labels(_predictor(BrightIsInfected()), shown, tmp_path / "b")[0]["label"]
    assert not np.asarray(Image.open(stored_label)).any()
    expected = (window_hu(hu) > 0.5)
    assert abs(float((np.asarray(Image.open(shown_label)) == 255).mean()) - float(expected.mean())) < 0.03
    means = []
    for item in (as_stored[0], shown[0]):  # the same augmentation draws for both
        image = train_transforms(40).set_random_state(seed=3)({**item, "label": shown_label})["image"]
        means.append(float(np.asarray(image).mean()))
    image = train_transforms(40)({**shown[0], "label": shown_label})
    assert "window" not in image  # consumed, so such items batch with labelled ones that never had a window
    assert means[1] > means[0] + 0.05  # before augmentation 0.45 against 0.13; after it, at least +0.07 (40 seeds)
