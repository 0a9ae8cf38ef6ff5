"""A training or evaluation dataset folder with a fault (missing mask, mask of another size, unreadable image,
empty split, mistyped pseudo-label folder) is an error naming the file or folder and the reason, never a silent
training on fewer slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from utils import REPO, bundle_cmd

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


def _dataset(root: Path, n: int = 3, split: str = "train") -> Path:
    base = root / ("train/labeled" if split == "train" else "test")
    for i in range(n):
        _grey(base / "images" / f"{i}.jpg", value=40 + i)
        _grey(base / "masks" / f"{i}.png", value=255 * (i % 2))
    return root


def test_a_cut_short_image_names_its_file(tmp_path):
    from covseg.io.slices import read_grey

    good = _grey(tmp_path / "good.jpg", size=(64, 64))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:300])  # PIL's own message, "image file is truncated", names no file
    with pytest.raises(ValueError, match=r"cut\.jpg: cannot read image"):
        read_grey(cut)
    with pytest.raises(FileNotFoundError):
        read_grey(tmp_path / "absent.jpg")


def test_an_empty_split_is_an_error_not_a_run_on_nothing(tmp_path):
    from covseg.io.slices import semiseg_items

    (tmp_path / "data" / "train" / "labeled" / "images").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"labeled/images: no images \(\.jpg, \.jpeg, \.png\) to train on"):
        semiseg_items(tmp_path / "data")


def test_evaluation_checks_the_ground_truth_before_predicting(tmp_path):
    from covseg.engines.evaluation.slices import check_ground_truth
    from covseg.io.slices import list_images

    data = _dataset(tmp_path / "data", split="test")
    images, masks = list_images(data / "test" / "images"), data / "test" / "masks"
    check_ground_truth(images, masks)
    (masks / "1.png").unlink()
    with pytest.raises(ValueError, match=r"masks/1\.png: ground-truth mask missing for 1\.jpg"):
        check_ground_truth(images, masks)
    with pytest.raises(ValueError, match=r"masks/2\.png: mask without an image"):
        check_ground_truth([images[0]], masks)
    with pytest.raises(ValueError, match=r"no image to score"):
        check_ground_truth([], masks)


def test_a_wrapped_input_error_is_one_line_and_a_bug_keeps_its_traceback(monkeypatch):
    from covseg.engines.bundle_errors import error_line

    def wrapped(cause: BaseException) -> RuntimeError:
        try:
            try:
                raise cause
            except Exception as exc:
                raise RuntimeError("Failed to evaluate ConfigExpression:\n'$semiseg_items(...)'") from exc
        except RuntimeError as outer:
            return outer

    monkeypatch.delenv("COVSEG_TRACEBACK", raising=False)
    assert error_line(wrapped(FileNotFoundError("/d/masks/1.png: mask missing\nfor 1.jpg"))) == \
        "error: /d/masks/1.png: mask missing for 1.jpg"
    worded = ValueError("/d/1.jpg: cannot read image (image file is truncated)")
    worded.__cause__ = OSError("image file is truncated")  # PIL's, naming no file: the outer one is shown
    assert error_line(wrapped(worded)) == "error: /d/1.jpg: cannot read image (image file is truncated)"
    assert error_line(wrapped(ZeroDivisionError("division by zero"))) is None
    monkeypatch.setenv("COVSEG_TRACEBACK", "1")
    assert error_line(wrapped(ValueError("x"))) is None


def _bundle_run(tmp_path: Path, run_id: str, config: str, *overrides: str):
    import os
    import subprocess

    return subprocess.run(bundle_cmd(run_id, f"{config}.yaml", "--output_dir", str(tmp_path / "out"), "--image_size",
                                     "32", *overrides), capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize(("fault", "expected"), [
    ("missing mask", "masks/1.png: mask missing for 1.jpg"),
    ("batch size 0", "batch_size should be a positive integer value, but got batch_size=0"),
    ("negative epochs", "max_epochs must be a whole number >= 1, got -1"),
])
def test_a_training_run_on_a_faulty_folder_or_option_is_one_error_line(tmp_path, fault, expected):
    data = _dataset(tmp_path / "data")
    options = {"missing mask": [], "batch size 0": ["--batch_size", "0"], "negative epochs": ["--max_epochs", "-1"]}
    if fault == "missing mask":
        (data / "train" / "labeled" / "masks" / "1.png").unlink()
    done = _bundle_run(tmp_path, "training", "train", "--dataset_dir", str(data), "--max_epochs", "1",
                       *options[fault])
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(errors) == 1 and expected in errors[0]
    assert not (tmp_path / "out" / "model_final.pt").exists()


def test_an_evaluate_run_with_a_missing_ground_truth_is_one_error_line_before_predicting(tmp_path):
    data = _dataset(tmp_path / "data", split="test")
    (data / "test" / "masks" / "2.png").unlink()
    done = _bundle_run(tmp_path, "evaluate", "evaluate", "--dataset_dir", str(data))
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert errors == [f"error: {data / 'test' / 'masks' / '2.png'}: ground-truth mask missing for 2.jpg"]
    assert not (tmp_path / "out" / "predictions").exists()


def test_a_mask_of_0_and_1_is_refused_not_trained_on_as_empty(tmp_path):
    from covseg.io.slices import semiseg_items

    data = _dataset(tmp_path / "data")
    _grey(data / "train" / "labeled" / "masks" / "1.png", value=1)
    with pytest.raises(ValueError, match=r"masks/1\.png: mask holds only 0 and 1"):
        semiseg_items(data)


def test_a_macos_copys_hidden_files_are_not_slices(tmp_path):
    from covseg.io.slices import semiseg_items

    data = _dataset(tmp_path / "data")
    (data / "train" / "labeled" / "images" / "._0.jpg").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    assert [it["name"] for it in semiseg_items(data)] == ["0", "1", "2"]
