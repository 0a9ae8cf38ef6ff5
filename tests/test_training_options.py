"""Option values no training can run with are refused up front, naming the option (the bundles' overrides reach
:func:`covseg.engines.training.trainer.build_trainer` as given)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from covseg.engines.training.trainer import build_trainer


def _loader() -> DataLoader:
    return DataLoader([{"image": torch.rand(1, 32, 32), "label": torch.zeros(1, 32, 32)} for _ in range(2)],
                      batch_size=2)


def _build(tmp_path, **options):
    options = {"image_size": 32, **options}
    return build_trainer(nn.Conv2d(1, 1, 3, padding=1), _loader(), tmp_path, scales=(1.0,),
                         loss_fn=nn.BCEWithLogitsLoss(), tensorboard=False, progress=False, **options)


@pytest.mark.parametrize(("options", "named"), [
    ({"max_epochs": -1}, "max_epochs"),
    ({"max_epochs": 0}, "max_epochs"),
    ({"val_interval": 0}, "val_interval"),
    ({"lr": -1.0}, "lr"),
    ({"lr": 0}, "lr"),
    ({"lr_schedule": "cosin"}, "lr_schedule"),
    ({"image_size": 0}, "image_size"),
])
def test_an_unusable_option_is_refused_before_anything_is_written(tmp_path, options, named):
    with pytest.raises(ValueError, match=rf"^{named} must be"):
        _build(tmp_path / "run", **options)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("schedule", "factor"), [
    ("cosine", lambda t: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))),  # to 1 % of lr
    ("poly", lambda t: (1 - t) ** 0.9),  # the FCN / DeepLab schedule
    ("constant", lambda t: 1.0),
], ids=["cosine", "poly", "constant"])
def test_the_known_schedules_set_the_learning_rate_of_each_step(tmp_path, monkeypatch, schedule, factor):
    """Each schedule of ``build_trainer``'s docstring, step by step: 4 epochs of one step, so t = 0, 1/4, 2/4, 3/4."""
    used = []
    step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    trainer = _build(tmp_path, max_epochs=4, lr=0.1, lr_schedule=schedule)
    trainer.run(_loader(), max_epochs=4)
    assert used == pytest.approx([0.1 * factor(k / 4) for k in range(4)], rel=1e-6)


def test_an_empty_validation_split_selects_nothing(tmp_path):
    """Fewer labelled slices than ``val_count`` leave the validation split empty: no Dice of 0 on no slices
    picks a ``model_best.pt``."""
    trainer = _build(tmp_path, max_epochs=1, val_loader=DataLoader([], batch_size=1), val_interval=1)
    trainer.run(_loader(), max_epochs=1)
    assert (tmp_path / "model_final.pt").exists()
    assert not (tmp_path / "model_best.pt").exists() and not (tmp_path / "best.json").exists()
