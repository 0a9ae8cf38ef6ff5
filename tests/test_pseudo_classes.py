"""Self-training of the multi-class head: pseudo class labels, their file, and the epoch draws that mix them with
the labelled slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from covseg.engines.training.pseudo_classes import label_slices, pseudo_items, save_pseudo_set
from covseg.engines.training.sampling import LabelledPlusDraws


class PriorCopy(nn.Module):
    """A 'head' whose class logits say: infection where the prior channel is high; there, GGO (logit 2), but
    consolidation (logit 1.51 + ``cons_bias``) on the left half of the image."""

    def __init__(self, cons_bias: float = 0.0) -> None:
        super().__init__()
        self.cons_bias = cons_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prior = x[:, 1:2]
        left = torch.zeros_like(prior)
        left[..., : x.shape[-1] // 2] = 1.0
        cons = 4 * prior * left - 2.49 + self.cons_bias
        return torch.cat([torch.zeros_like(prior), 4 * prior - 2, cons], dim=1)


def test_labelled_plus_draws_take_every_labelled_item_and_fresh_extra_ones_each_epoch():
    sampler = LabelledPlusDraws(labelled=5, extra=100, per_epoch=7, seed=3)
    epochs = []
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        drawn = list(sampler)
        assert len(drawn) == len(sampler) == 12
        assert sorted(i for i in drawn if i < 5) == [0, 1, 2, 3, 4]
        extra = [i for i in drawn if i >= 5]
        assert len(set(extra)) == 7 and all(i < 105 for i in extra)
        epochs.append(drawn)
    assert set(epochs[0][5:]) != set(epochs[1][5:]) or epochs[0] != epochs[1]
    sampler.set_epoch(1)
    assert list(sampler) == epochs[0]  # by (seed, epoch): a resumed run draws the same
    assert len(LabelledPlusDraws(5, 3, 7)) == 8  # never more extra items than there are
    with pytest.raises(ValueError):
        LabelledPlusDraws(0, 3, 1)


def test_label_slices_follow_the_head_and_merge_small_consolidation_into_ggo():
    image = np.zeros((40, 60), np.float32)
    prior = np.zeros((40, 60), np.float32)
    prior[10:30, 5:25] = 1.0  # left half
    prior[10:30, 35:55] = 1.0  # right half
    once = {"image_size": 32, "flip_average": False, "bf16": False}
    labels = label_slices(PriorCopy(), [image], [prior], merge_below=0.0, **once)
    assert labels[0].shape == (1, 40, 60) and labels[0].dtype == np.uint8
    assert (labels[0][0, 15:25, 10:20] == 1).all() and (labels[0][0, 15:25, 40:50] == 1).all()
    assert (labels[0][0, :5] == 0).all()
    labels = label_slices(PriorCopy(cons_bias=1.0), [image], [prior], merge_below=0.0, **once)
    assert (labels[0][0, 15:25, 10:20] == 2).all() and (labels[0][0, 15:25, 40:50] == 1).all()
    merged = label_slices(PriorCopy(cons_bias=1.0), [image], [prior], merge_below=0.5, **once)
    assert (merged[0][0, 15:25, 10:20] == 1).all()  # consolidation on < 50 % of the slice becomes GGO
    # flip-averaged, half the views see the left lesion on the right: consolidation 0.51 < GGO 2
    flipped = label_slices(PriorCopy(cons_bias=1.0), [image], [prior], 32, 0.0, flip_average=True, bf16=False)
    assert (flipped[0][0, 15:25, 10:20] == 1).all()
    with pytest.raises(ValueError, match="one size"):
        label_slices(PriorCopy(), [image], [prior[:20]])


def test_pseudo_set_round_trip_and_one_line_errors(tmp_path):
    rng = np.random.default_rng(0)
    shapes = [(30, 40), (25, 50)]  # slices differ in size
    images = [rng.random(s).astype(np.float32) for s in shapes]
    priors = [rng.random(s).astype(np.float32) for s in shapes]
    labels = [rng.integers(0, 3, s).astype(np.uint8) for s in shapes]
    path = save_pseudo_set(tmp_path / "set.npz", ["a", "b"], images, priors, labels)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    items = pseudo_items(path)
    assert [it["name"] for it in items] == ["a", "b"]
    for it, image, prior, label in zip(items, images, priors, labels):
        assert it["image"].shape == it["prior"].shape == it["label"].shape == (1, *image.shape)
        assert np.allclose(it["image"][0], image, atol=1e-3) and np.array_equal(it["label"][0], label)
        assert np.allclose(it["prior"][0].astype(np.float32), prior, atol=1e-3)
    np.savez(tmp_path / "other.npz", names=np.array(["a"]))
    with pytest.raises(ValueError, match=r"other\.npz: not a pseudo-label set \(missing images"):
        pseudo_items(tmp_path / "other.npz")
    (tmp_path / "cut.npz").write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"cut\.npz: cannot be read"):
        pseudo_items(tmp_path / "cut.npz")
    with pytest.raises(ValueError, match="one entry per slice"):
        save_pseudo_set(tmp_path / "x.npz", ["a"], images, priors, labels)
