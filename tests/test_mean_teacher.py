"""Mean-teacher training: the EMA step, the two views, the split forward pass, and a resumable tiny run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Events
from torch import nn
from utils import bright_square_slices

import covseg.engines.training.mean_teacher as mean_teacher
from covseg.engines.training.mean_teacher import MeanTeacher, paired_items, paired_transforms, train_mean_teacher
from covseg.engines.training.semi_supervised import run_to_end
from covseg.networks.outputs import DeepSupervisionOutput, split_output
from covseg.transforms.views import strong_view


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))


def _labelled(count: int = 3, size: int = 40) -> list[dict]:
    grey = np.full((size, size), 0.15, np.float32)
    grey[8:28, 12:30] = 0.85
    return [{"name": f"l{i}", "image": np.rot90(grey, i).copy()[None],
             "label": (np.rot90(grey, i) > 0.5).astype(np.float32)[None]} for i in range(count)]


def test_first_update_is_an_ema_step_and_buffers_follow():
    student = _net()
    start = {k: v.clone() for k, v in student.state_dict().items()}
    teacher = MeanTeacher(student, decay=0.9, image_size=32)
    with torch.no_grad():
        student[0].weight.add_(1.0)
        student[1].running_mean.fill_(2.0)
    teacher.update(student)
    got = teacher.network.state_dict()
    assert torch.allclose(got["0.weight"], 0.9 * start["0.weight"] + 0.1 * student[0].weight)
    assert torch.allclose(got["1.running_mean"], torch.full((4,), 0.2))
    assert not any(p.requires_grad for p in teacher.ema.parameters())


def test_bad_decay_is_refused():
    with pytest.raises(ValueError, match="decay"):
        MeanTeacher(_net(), decay=1.0)


def test_strong_view_changes_grey_levels_not_shape_or_range():
    view = strong_view(32)
    view.set_random_state(seed=1)
    image = torch.rand(1, 32, 32)
    changed = [torch.as_tensor(view(image)) for _ in range(8)]
    assert all(v.shape == image.shape and float(v.min()) >= 0.0 and float(v.max()) <= 1.0 for v in changed)
    assert max(float((v - image).abs().mean()) for v in changed) > 0.02


def test_split_output_cuts_every_map():
    out = DeepSupervisionOutput(torch.zeros(5, 1, 4, 4), [torch.ones(5, 1, 4, 4)], torch.zeros(5, 1, 4, 4))
    first, rest = split_output(out, 2)
    assert first.final.shape[0] == 2 and rest.side[0].shape[0] == 3 and rest.edge.shape[0] == 3
    a, b = split_output(torch.zeros(5, 2), 4)
    assert a.shape == (4, 2) and b.shape == (1, 2)


def test_paired_items_cycle_the_labelled_slices(tmp_path: Path):
    pool = bright_square_slices(tmp_path, 5, size=40)
    items = paired_items(_labelled(2), [{**p, "window": (-600, 1500)} for p in pool])
    assert len(items) == 5 and items[2]["image"] is items[0]["image"] and items[4]["unlabelled_window"] == (-600, 1500)
    out = paired_transforms(32)(items[0])
    assert out["image"].shape == out["unlabelled"].shape == (1, 32, 32) and "unlabelled_window" not in out
    with pytest.raises(ValueError, match="labelled and unlabelled"):
        paired_items([], pool)


def _run(tmp_path: Path, out: Path, epochs: int) -> Path:
    pool = bright_square_slices(tmp_path / "pool", 6, size=40)
    labelled = _labelled()
    return train_mean_teacher(_net(), labelled[:2], pool, out, val_items=labelled[2:], epochs=epochs,
                              samples_per_epoch=4, batch_size=2, lr=1e-2, image_size=32, scales=(1.0,), seed=5,
                              decay=0.5)


def test_tiny_run_writes_teacher_and_student_and_resumes_exactly(tmp_path: Path, monkeypatch):
    whole = _run(tmp_path, tmp_path / "whole", 2)
    teacher = torch.load(whole, weights_only=True)
    student = torch.load(tmp_path / "whole" / "model_student.pt", weights_only=True)
    assert set(teacher) == set(student) and "n_averaged" not in teacher
    assert not torch.equal(teacher["0.weight"], student["0.weight"])  # the teacher lags the student
    assert not torch.equal(teacher["0.weight"], _net().state_dict()["0.weight"])  # and it moved
    class Killed(Exception):
        pass

    def killed_after_first_epoch(trainer, loader, epochs):  # after epoch 1's checkpoint is on disk
        trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda _: (_ for _ in ()).throw(Killed()))
        run_to_end(trainer, loader, epochs)

    monkeypatch.setattr(mean_teacher, "run_to_end", killed_after_first_epoch)
    with pytest.raises(Killed):
        _run(tmp_path, tmp_path / "split", 2)
    assert not (tmp_path / "split" / "model_final.pt").exists()
    monkeypatch.setattr(mean_teacher, "run_to_end", run_to_end)
    resumed = torch.load(_run(tmp_path, tmp_path / "split", 2), weights_only=True)
    for key, value in teacher.items():
        assert torch.equal(resumed[key], value), key
