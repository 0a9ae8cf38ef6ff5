"""Infection-free training slices for Inf-Net: non-COVID slices of a labels.csv folder with empty masks, drawn by
seed from one source's split, and the training config that adds them."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covseg.io.slices import infection_free_items


def _cls_folder(root: Path) -> Path:
    """6 slices: 4 non-COVID (2 train, 1 val of source s, 1 train of source t) and 2 COVID, grey = row index."""
    rows = [("n0.png", "noncovid", "s", "train"), ("n1.png", "noncovid", "s", "train"),
            ("n2.png", "noncovid", "s", "val"), ("n3.png", "noncovid", "t", "train"),
            ("c0.png", "covid", "s", "train"), ("c1.png", "covid", "s", "train")]
    root.mkdir(parents=True)
    for i, (name, *_) in enumerate(rows):
        Image.fromarray(np.full((30, 40), 40 * i, np.uint8)).save(root / name)
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "source", "split"])
        writer.writerows(rows)
    return root


def test_infection_free_items_are_non_covid_slices_of_the_split_with_empty_masks(tmp_path):
    folder = _cls_folder(tmp_path / "cls")
    items = infection_free_items(folder, 2, source="s", split="train", seed=3)
    assert sorted(it["name"] for it in items) == ["n0", "n1"]  # neither COVID, val nor the other source
    for it in items:
        assert it["image"].shape == it["label"].shape == (1, 30, 40)
        assert not it["label"].any() and it["image"].dtype == np.float32
        assert it["image"].max() == pytest.approx(40 * int(it["name"][1]) / 255)
    one = [infection_free_items(folder, 1, source="s", seed=s)[0]["name"] for s in range(8)]
    assert set(one) == {"n0", "n1"}  # the seed picks which
    assert infection_free_items(folder, 0, source="s") == []
    with pytest.raises(ValueError, match="asked for 3 non-COVID s train slices, it has 2"):
        infection_free_items(folder, 3, source="s")


def test_train_config_adds_the_negatives_to_the_training_data(tmp_path, semiseg_dir):
    from monai.bundle import ConfigParser

    bundle = Path(__file__).resolve().parents[1] / "bundles" / "infnet"
    parser = ConfigParser()
    parser.read_config(bundle / "configs" / "train.yaml")
    parser.update({"bundle_root": str(bundle), "dataset_dir": str(semiseg_dir), "train_limit": 4,
                   "negatives_dir": str(_cls_folder(tmp_path / "cls")), "negative_slices": 2, "negatives_source": "s",
                   "output_dir": str(tmp_path / "out")})
    data = parser.get_parsed_content("train#dataset#data")
    assert len(data) == 3 + 2 and [not it["label"].any() for it in data[-2:]] == [True, True]
    parser.update({"negative_slices": 0})
    assert len(parser.get_parsed_content("train#dataset#data", lazy=False)) == 3  # the default: none
