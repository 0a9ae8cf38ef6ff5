"""Self-supervised pre-training: restoration pairs, the restoration loss, and the bundle's pretraining run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from utils import INFNET_BUNDLE, bundle_cmd, run_ok

from covseg.io.slices import unlabelled_items
from covseg.losses.restoration import restoration_loss
from covseg.networks.infnet import InfNet
from covseg.networks.loading import load_weights
from covseg.networks.outputs import DeepSupervisionOutput
from covseg.transforms.restoration import restoration_transforms


def _slice_file(tmp_path: Path, seed: int = 0) -> str:
    """A synthetic 8-bit slice with structure (a bright disc on a gradient), saved as JPEG."""
    yy, xx = np.mgrid[0:120, 0:100]
    img = 60 + xx + 100 * (((yy - 60) ** 2 + (xx - 50) ** 2) < 900)
    img = img + np.random.default_rng(seed).normal(0, 5, img.shape)
    path = tmp_path / f"slice{seed}.jpg"
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
    return str(path)


def test_restoration_pair_keeps_the_clean_slice_as_target(tmp_path):
    torch.manual_seed(0)
    transform = restoration_transforms(64)
    transform.set_random_state(seed=0)
    pair = transform({"image": _slice_file(tmp_path)})
    assert pair["image"].shape == pair["label"].shape == (1, 64, 64)
    assert float(pair["image"].min()) >= 0.0 and float(pair["image"].max()) <= 1.0
    assert float((pair["image"] - pair["label"]).abs().mean()) > 0.01  # the input really is distorted
    clean = np.asarray(Image.open(tmp_path / "slice0.jpg"), dtype=np.float32) / 255
    # the target is the clean slice, only resized and turned: its grey-level mean is kept
    assert abs(float(pair["label"].mean()) - clean.mean()) < 0.02


def test_restoration_loss_prefers_the_clean_slice():
    clean = torch.rand(2, 1, 32, 32) * 0.8 + 0.1
    logit_of = torch.logit
    exact = DeepSupervisionOutput(final=logit_of(clean), side=[logit_of(clean)], edge=None)
    noisy = DeepSupervisionOutput(final=logit_of((clean + 0.1 * torch.randn_like(clean)).clamp(0.01, 0.99)),
                         side=[logit_of(clean)], edge=torch.zeros_like(clean))
    loss = restoration_loss()
    assert float(loss(exact, clean)) < 1e-8
    assert float(loss(noisy, clean, torch.ones_like(clean))) > 1e-3
    assert float(loss(logit_of(clean), clean)) < 1e-8  # plain tensors too


def test_unlabelled_items_name_the_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="unlabeled"):
        unlabelled_items(tmp_path)


def test_unlabelled_items_list_the_real_pool(semiseg_dir):
    items = unlabelled_items(semiseg_dir)
    assert len(items) == 1600 and all(Path(it["image"]).exists() for it in items[:5])


@pytest.mark.slow
def test_pretraining_run_gives_weights_that_training_starts_from(semiseg_dir, tmp_path):
    out = tmp_path / "pretrain"
    pretrain = str(INFNET_BUNDLE / "configs" / "pretrain.yaml")
    proc = run_ok(bundle_cmd("pretraining", pretrain, "--dataset_dir", str(semiseg_dir), "--output_dir", str(out),
                             "--max_epochs", "1", "--train_limit", "4", "--image_size", "64", "--batch_size", "2"))
    assert "epoch 1/1" in proc.stdout
    pretrained = load_weights(InfNet(), out / "model_final.pt")
    fresh = InfNet()
    changed = [k for k, v in fresh.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, pretrained.state_dict()[k])]
    assert changed  # the restoration steps updated the weights
    run = tmp_path / "train"
    proc = run_ok(bundle_cmd("training", "train.yaml", "--dataset_dir", str(semiseg_dir),
                        "--output_dir", str(run), "--max_epochs", "1", "--train_limit", "4", "--image_size", "64",
                        "--batch_size", "2", "--init_weights", str(out / "model_final.pt")))
    assert "epoch 1/1" in proc.stdout and (run / "model_final.pt").exists()
    # the network that run started from holds the pre-trained weights (a run that ignored --init_weights, or
    # loaded them into a network it then threw away, would pass the lines above)
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(INFNET_BUNDLE / "configs" / "train.yaml"))
    parser.update({"bundle_root": str(INFNET_BUNDLE), "init_weights": str(out / "model_final.pt")})
    started = parser.get_parsed_content("network").state_dict()
    for key, value in pretrained.state_dict().items():
        assert torch.equal(started[key], value), key


def test_pretraining_loader_keeps_a_smoke_run_smaller_than_one_batch(tmp_path):
    """`--train_limit 4` at the default batch size (6) gave an empty loader: ignite's 'Input data has zero size'."""
    from monai.bundle import ConfigParser

    folder = tmp_path / "semiseg" / "train" / "unlabeled" / "images"
    folder.mkdir(parents=True)
    for seed in range(4):
        Path(_slice_file(folder, seed))
    parser = ConfigParser()
    parser.read_config(str(INFNET_BUNDLE / "configs" / "pretrain.yaml"))
    parser.update({"dataset_dir": str(tmp_path / "semiseg"), "image_size": 64, "device": "cpu"})
    assert parser.get_parsed_content("batch_size") == 6
    loader = parser.get_parsed_content("pretrain#dataloader")
    assert len(loader) == 1
    parser.update({"batch_size": 2})
    assert len(parser.get_parsed_content("pretrain#dataloader", lazy=False)) == 2  # full batches when there are
