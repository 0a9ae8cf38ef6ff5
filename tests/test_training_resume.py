"""``kill -9`` of a training run, then a resume that loses at most the epoch in progress (issue #16).

A tiny network on 4 synthetic 32x32 slices (2 iterations per epoch, validation every epoch) trains in a
forked child that SIGKILLs itself at a chosen point of epoch 3. The resume (in this process) must start from
epoch 2's checkpoint with exactly its network weights and optimiser state, then finish the run.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import covseg.engines.training.trainer as training
from covseg.engines.training.checkpoints import latest_checkpoint
from covseg.engines.training.trainer import build_trainer

CTX = multiprocessing.get_context("fork")
EPOCHS = 4
KILL_EPOCH = 3


def _data() -> list[dict]:
    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(4):
        image = torch.rand(1, 32, 32, generator=g)
        items.append({"image": image, "label": (image > 0.5).float()})
    return items


def _trainer(out: Path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))
    loader = DataLoader(_data(), batch_size=2, shuffle=True)
    val = DataLoader(_data()[:1], batch_size=1)
    trainer = build_trainer(net, loader, out, val_loader=val, max_epochs=EPOCHS, lr=1e-2, image_size=32,
                            scales=(1.0,), loss_fn=nn.BCEWithLogitsLoss(), val_interval=1, tensorboard=False,
                            progress=False)
    return trainer, net, loader


def _epoch(checkpoint: dict) -> int:
    """The epoch a checkpoint was saved at (ignite stores the iteration and the epoch length)."""
    return checkpoint["trainer"]["iteration"] // checkpoint["trainer"]["epoch_length"]


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _train_and_die(out: str, point: str) -> None:
    torch.set_num_threads(1)
    from ignite.engine import Events

    trainer, net, loader = _trainer(Path(out))
    if point == "mid-epoch":
        trainer.add_event_handler(Events.ITERATION_STARTED(once=(KILL_EPOCH - 1) * 2 + 2), _die)
    elif point == "saving the checkpoint":
        real_save = torch.save

        def half_then_die(obj, f, *args, **kwargs):  # ignite's DiskSaver writes a temporary file, then renames
            if isinstance(obj, dict) and "optimizer" in obj and _epoch(obj) == KILL_EPOCH:
                real_save(obj, f, *args, **kwargs)
                f.flush()
                os.truncate(f.name, os.path.getsize(f.name) // 2)
                _die()
            real_save(obj, f, *args, **kwargs)

        torch.save = half_then_die
    elif point == "writing best.json":
        real_write = training.atomic_write_text
        calls = {"n": 0}

        def die_on_third(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == KILL_EPOCH:
                _die()
            return real_write(*args, **kwargs)

        training.atomic_write_text = die_on_third
    trainer.run(loader, max_epochs=EPOCHS)
    os._exit(0)


@pytest.mark.parametrize("point", ["mid-epoch", "saving the checkpoint", "writing best.json"])
def test_kill9_during_training_then_resume_loses_at_most_the_epoch_in_progress(tmp_path, point, one_torch_thread):
    out = tmp_path / "run"
    proc = CTX.Process(target=_train_and_die, args=(str(out), point))
    proc.start()
    proc.join(timeout=300)
    assert proc.exitcode == -signal.SIGKILL

    last = latest_checkpoint(out)
    saved = torch.load(last, map_location="cpu", weights_only=False)
    expected_epoch = KILL_EPOCH if point == "writing best.json" else KILL_EPOCH - 1  # best.json comes after it
    assert _epoch(saved) == expected_epoch
    assert last.name == f"checkpoint_{expected_epoch}.pt"

    trainer, net, loader = _trainer(out)  # resume=True: loads the newest complete checkpoint
    assert trainer.state.epoch == expected_epoch
    for key, value in saved["network"].items():
        assert torch.equal(net.state_dict()[key], value), key
    opt_state = _optimizer_of(trainer)
    for pid, state in saved["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(opt_state["state"][pid][name], value), (pid, name)
    assert not [p for p in out.iterdir() if p.name.startswith("tmp")]  # a killed save's temporary is removed
    trainer.run(loader, max_epochs=EPOCHS)
    assert trainer.state.epoch == EPOCHS
    assert _epoch(torch.load(latest_checkpoint(out), weights_only=False)) == EPOCHS


def _optimizer_of(trainer) -> dict:
    """The optimiser state dict the trainer's checkpoint handler would save now."""
    from ignite.engine import Events
    from ignite.handlers import Checkpoint

    for handler, _, _ in trainer._event_handlers[Events.EPOCH_COMPLETED]:
        if isinstance(handler, Checkpoint):
            return handler.to_save["optimizer"].state_dict()
    raise AssertionError("no Checkpoint handler on the trainer")


def test_the_same_command_after_a_finished_run_trains_nothing(tmp_path, one_torch_thread):
    out = tmp_path / "run"
    trainer, net, loader = _trainer(out)
    trainer.run(loader, max_epochs=EPOCHS)
    final = torch.load(out / "model_final.pt", weights_only=False)
    (out / "model_final.pt").unlink()  # as after a kill between the last checkpoint and the final weights
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("checkpoint_*.pt")}

    trainer, net, loader = _trainer(out)  # ignite alone would start a finished state over from epoch 1
    trainer.run(loader, max_epochs=EPOCHS)
    assert trainer.state.epoch == EPOCHS
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("checkpoint_*.pt")} == stamps  # no epoch was retrained
    again = torch.load(out / "model_final.pt", weights_only=False)
    assert all(torch.equal(again[k], v) for k, v in final.items())


def test_a_resumed_run_keeps_two_checkpoints_not_one_more_per_resume(tmp_path, one_torch_thread):
    out = tmp_path / "run"
    for epochs in (1, 2, 3, EPOCHS):  # three resumes, one epoch each
        trainer, net, loader = _trainer(out)
        trainer.run(loader, max_epochs=epochs)
    assert sorted(p.name for p in out.glob("checkpoint_*.pt")) == ["checkpoint_3.pt", "checkpoint_4.pt"]
