"""A training or evaluation dataset folder with a fault (missing mask, mask of another size, unreadable image,
empty split, mistyped pseudo-label folder) is an error naming the file or folder and the reason, never a silent
training on fewer slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covseg.io.slices import pseudo_labelled_training_items


def _grey(path: Path, size: tuple[int, int] = (40, 30), value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, np.uint8)).save(path)
    return path


def _unlabelled(root: Path, names=("Data-1_a_1", "Data-1_a_2")) -> Path:
    for name in names:
        _grey(root / "train" / "unlabeled" / "images" / f"{name}.jpg")
    return root


def test_a_pseudo_label_folder_that_is_not_there_is_an_error_not_a_supervised_run(tmp_path):
    data = _unlabelled(tmp_path / "data")
    with pytest.raises(FileNotFoundError, match=r"pseudo_labelz: pseudo-label folder not found"):
        pseudo_labelled_training_items(data, tmp_path / "pseudo_labelz")


def test_a_pseudo_label_folder_without_a_matching_label_is_an_error(tmp_path):
    data = _unlabelled(tmp_path / "data")
    _grey(tmp_path / "labels" / "other.png")
    with pytest.raises(ValueError, match=r"labels: no pseudo label named like an unlabelled slice"):
        pseudo_labelled_training_items(data, tmp_path / "labels")


def test_the_labelled_unlabelled_slices_are_the_items(tmp_path):
    data = _unlabelled(tmp_path / "data")
    _grey(tmp_path / "labels" / "Data-1_a_2.png")
    items = pseudo_labelled_training_items(data, tmp_path / "labels")
    assert [it["name"] for it in items] == ["Data-1_a_2"] and items[0]["label"].endswith("Data-1_a_2.png")
