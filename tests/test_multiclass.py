"""C-class training path: class masks read by index, softmax losses, per-class metrics, prior transforms, trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Events
from PIL import Image

from covseg.engines.training.trainer import build_trainer
from covseg.engines.training.validation import validate
from covseg.io.slices import read_class_mask, semiseg_items
from covseg.losses.multiclass import multiclass_loss
from covseg.metrics.multiclass import ClassToolbox, class_scores, class_scores_from_counts
from covseg.networks.registry import get_network
from covseg.transforms.priors import PickPriord, multiclass_eval_transforms, multiclass_train_transforms


def _palette_png(path, mask):
    img = Image.fromarray(mask.astype(np.uint8), mode="P")
    img.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9))
    img.save(path)


def test_class_mask_is_read_by_index_not_colour(tmp_path):
    mask = np.zeros((6, 5), np.uint8)
    mask[1:3, 1:3], mask[4, :] = 1, 2
    _palette_png(tmp_path / "m.png", mask)
    assert np.array_equal(read_class_mask(tmp_path / "m.png"), mask)
    Image.fromarray(mask * 2).save(tmp_path / "bad.png")  # index 4 in a 3-class mask
    with pytest.raises(ValueError, match="bad.png.*out of range"):
        read_class_mask(tmp_path / "bad.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="rgb.png.*mode RGB"):
        read_class_mask(tmp_path / "rgb.png")


def test_semiseg_multiclass_items_agree_with_binary_masks(semiseg_dir):
    multi = semiseg_items(semiseg_dir, "test", limit=6, labels="multiclass")
    binary = semiseg_items(semiseg_dir, "test", limit=6)
    for m, b in zip(multi, binary):
        assert m["label"].dtype == np.uint8 and set(np.unique(m["label"])) <= {0, 1, 2}
        agree = np.mean((m["label"] > 0) == (b["label"] > 0.5))
        assert agree > 0.99, m["name"]


@pytest.mark.parametrize("name", ["ce_dice", "ce", "dice"])
def test_multiclass_losses_prefer_the_right_classes(name):
    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 4:8, 4:8], target[:, :, 10:14, 2:6] = 1, 2
    onehot = torch.nn.functional.one_hot(target[:, 0].long(), 3).permute(0, 3, 1, 2).float()
    good, bad = onehot * 8 - 4, onehot.roll(1, dims=1) * 8 - 4
    loss = multiclass_loss(name, class_weights=[1.0, 1.0, 2.0] if name != "dice" else None)
    assert float(loss(good, target)) < float(loss(bad, target))


def test_multiclass_loss_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown multi-class loss"):
        multiclass_loss("focal")


def test_class_scores_on_known_maps():
    gt = np.zeros((10, 10), np.int64)
    gt[:5] = 1
    gt[5:, :5] = 2
    pred = gt.copy()
    pred[0, :] = 2  # 10 GGO pixels called consolidation
    scores = class_scores(pred, gt)
    assert scores["ggo"]["dice"] == pytest.approx(2 * 40 / (40 + 50))
    assert scores["consolidation"]["precision"] == pytest.approx(25 / 35)
    assert "background" not in scores
    probs = np.stack([(pred == c).astype(np.float32) for c in range(3)])
    assert class_scores(probs, gt)["ggo"]["dice"] == pytest.approx(scores["ggo"]["dice"])
    summed = class_scores_from_counts({"ggo": {k: scores["ggo"][k] * 2 for k in ("tp", "fp", "fn", "tn")}})
    assert summed["ggo"]["dice"] == pytest.approx(scores["ggo"]["dice"])


def test_class_toolbox_scores_each_class_map():
    gt = np.zeros((20, 20), np.int64)
    gt[2:8, 2:8], gt[12:18, 12:18] = 1, 2
    perfect = np.stack([(gt == c).astype(np.float32) for c in range(3)])
    swapped = perfect[[0, 2, 1]]
    box = ClassToolbox()
    box.add(perfect, gt)
    assert box.figures()["ggo"]["meanDic"] > 0.99
    box2 = ClassToolbox()
    box2.add(swapped, gt)
    assert box2.figures()["consolidation"]["meanDic"] < 0.1


def test_pick_prior_draws_and_train_transforms_keep_classes():
    rng = np.random.default_rng(0)
    item = {"image": rng.random((1, 40, 30)).astype(np.float32),
            "prior": np.stack([np.full((40, 30), v, np.float16) for v in (0.1, 0.2, 0.3)]),
            "clean_prior": np.full((1, 40, 30), 0.9, np.float16),
            "label": rng.integers(0, 3, (1, 40, 30)).astype(np.uint8)}
    pick = PickPriord(random=True)
    pick.set_random_state(0)
    seen = {round(float(pick(item)["prior"].mean()), 1) for _ in range(30)}
    assert seen == {0.1, 0.2, 0.3}
    assert float(PickPriord(random=False)(item)["prior"].mean()) == pytest.approx(0.1, abs=1e-3)
    always_clean = PickPriord(random=True, clean_prob=1.0)
    assert float(always_clean(item)["prior"].mean()) == pytest.approx(0.9, abs=1e-3)
    out = multiclass_train_transforms(32)(item)
    assert out["image"].shape == (2, 32, 32) and "prior" not in out
    assert set(np.unique(np.asarray(out["label"]))) <= {0, 1, 2}
    ev = multiclass_eval_transforms(32)(item)
    assert ev["image"].shape == (2, 32, 32) and ev["label"].shape == (1, 40, 30)


def _toy_items(n, rng):
    """Class 1 where the slice is mid-grey inside the prior, class 2 where it is bright inside the prior."""
    items = []
    for i in range(n):
        image = np.full((32, 32), 0.1, np.float32)
        label = np.zeros((32, 32), np.uint8)
        r, c = rng.integers(2, 14, 2)
        image[r:r + 8, c:c + 8], label[r:r + 8, c:c + 8] = 0.5, 1
        image[r + 14:r + 18, c + 8:c + 16], label[r + 14:r + 18, c + 8:c + 16] = 0.9, 2
        prior = (label > 0).astype(np.float16)[None]
        items.append({"name": str(i), "image": image[None], "prior": prior, "clean_prior": prior,
                      "label": label[None]})
    return items


def test_trainer_learns_classes_with_poly_schedule(tmp_path, one_torch_thread):
    """The toy task is learnt (label Dice > 0.8 / 0.6). The network's initial weights come from torch's global
    generator, so they are seeded here: unseeded, they followed whatever the tests before had drawn, and 2 of 26
    seeds tried (12, 13) stay below the bars after 30 epochs, which made the test fail by test order."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    train = torch.utils.data.DataLoader(
        [multiclass_eval_transforms(32)(it) for it in _toy_items(16, rng)], batch_size=4, shuffle=True)
    val = torch.utils.data.DataLoader([multiclass_eval_transforms(32)(it) for it in _toy_items(4, rng)],
                                      batch_size=1)
    net = get_network("multiclass_unet", features=(8, 8, 16, 16, 32, 8))
    before = validate(net, val, torch.device("cpu"), num_classes=3)
    trainer = build_trainer(net, train, tmp_path, val_loader=val, max_epochs=30, lr=3e-3, lr_schedule="poly",
                            image_size=32, scales=(1.0,), num_classes=3, val_interval=30, tensorboard=False,
                            progress=False)
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"]))
    trainer.run(train, max_epochs=30)
    assert np.mean(losses[-8:]) < 0.6 * np.mean(losses[:8])
    after = validate(net, val, torch.device("cpu"), num_classes=3)
    assert set(after) >= {"val_dice", "val_dice_ggo", "val_dice_consolidation", "val_label_dice_ggo"}
    assert after["val_label_dice_ggo"] > 0.8 and after["val_label_dice_consolidation"] > 0.6, after
    assert after["val_dice"] > before["val_dice"]
    assert (tmp_path / "model_best.pt").exists()


def test_cross_validation_folds_hold_out_every_slice_once_and_fold_0_of_10_is_the_usual_split():
    import sys
    from pathlib import Path

    from covseg.io.slices import fold_split, split_train_val

    items = [{"name": f"s{i}"} for i in range(50)]
    held = [it["name"] for k in range(5) for it in fold_split(items, 5, k)[1]]
    assert sorted(held) == sorted(it["name"] for it in items)  # each slice held out exactly once
    for k in range(5):
        train, val = fold_split(items, 5, k)
        assert len(val) == 10 and len(train) == 40 and not {t["name"] for t in train} & {v["name"] for v in val}
    assert fold_split(items, 10, 0)[1] == split_train_val(items, 5)[1]
    with pytest.raises(ValueError, match="fold"):
        fold_split(items, 5, 5)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from multiclass_cv import epoch_figures

    log = ("noise\nepoch 1/2 loss 0.90 val_dice 0.30 val_dice_ggo 0.40 val_dice_consolidation 0.20\n"
           "2026 - INFO - epoch 2/2 loss 0.80 val_dice 0.35 val_dice_ggo 0.45 val_dice_consolidation 0.25\n")
    assert epoch_figures(log) == {1: {"val_dice": 0.30, "val_dice_ggo": 0.40, "val_dice_consolidation": 0.20},
                                  2: {"val_dice": 0.35, "val_dice_ggo": 0.45, "val_dice_consolidation": 0.25}}
