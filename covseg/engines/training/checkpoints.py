"""What a training run keeps on disk: epoch checkpoints it resumes from, weight files, weight snapshots.

:func:`attach_checkpoints` saves ``checkpoint_<epoch>.pt`` after each epoch and loads the newest on resume;
:class:`ResumableEngine` finishes a run resumed at its last epoch instead of starting it over;
:func:`attach_snapshot_averaging` keeps ``snapshot_<epoch>.pt`` files and averages them into ``model_swa.pt``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from torch import nn

from covseg.engines.training.averaging import average_weights
from covseg.io.atomic import atomic_path

__all__ = ["ResumableEngine", "attach_checkpoints", "attach_snapshot_averaging", "checkpoints_by_epoch",
           "latest_checkpoint", "save_weights"]

log = logging.getLogger(__name__)


class ResumableEngine(Engine):
    """An ignite ``Engine`` whose :meth:`run` finishes a run resumed at (or past) its last epoch instead of starting
    it over, as ignite does with a finished state: the ``COMPLETED`` handlers run (final weights, snapshot
    average), nothing is trained. So the same command run again (or after a kill between the last checkpoint and
    ``model_final.pt``) leaves the run's weights as they are."""

    def run(self, data=None, max_epochs: int | None = None, epoch_length: int | None = None,
            max_iters: int | None = None):
        done = self.state.epoch
        if max_epochs is not None and self.state.max_epochs is not None and 1 <= max_epochs <= done:
            msg = (f"already trained to epoch {done} (max_epochs {max_epochs}): nothing to train, final weights "
                   "written from the last checkpoint (a larger --max_epochs trains on)")
            log.info(msg)
            print(msg, flush=True)
            self.fire_event(Events.COMPLETED)
            return self.state
        return super().run(data, max_epochs=max_epochs, epoch_length=epoch_length, max_iters=max_iters)


def attach_checkpoints(trainer: Engine, to_save: dict, output_dir: Path, device: torch.device, resume: bool = True,
                       rank: int = 0) -> Checkpoint:
    """Save ``to_save`` as ``output_dir/checkpoint_<epoch>.pt`` after each epoch, keeping the newest two; with
    ``resume``, first remove a save cut short by kill -9 and load the newest checkpoint.

    n_saved=2: ignite deletes the oldest checkpoint *before* writing the new one, so with 1 a kill -9 during the
    save would leave none; with 2 the previous epoch's stays until the new one is complete. The checkpoints found
    on resume are handed to the handler, so a resumed run deletes them in turn instead of leaving them behind.
    """
    checkpoint = Checkpoint(to_save, DiskSaver(str(output_dir), require_empty=False), n_saved=2,
                            global_step_transform=lambda engine, _: engine.state.epoch)  # checkpoint_<epoch>.pt
    trainer.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
    if not resume:
        return checkpoint
    for leftover in output_dir.glob("tmp*"):  # a checkpoint save cut short by kill -9 (ignite's temporary)
        if re.fullmatch(r"tmp[a-z0-9_]{8}", leftover.name) and leftover.is_file() and rank == 0:
            leftover.unlink(missing_ok=True)
    found = checkpoints_by_epoch(output_dir)
    if found:
        last = found[-1][1]
        Checkpoint.load_objects(to_save, torch.load(last, map_location=device, weights_only=False))
        checkpoint.load_state_dict({"_saved": [(epoch, path.name) for epoch, path in found[-2:]]})
        log.info("resumed from %s at epoch %d", last, trainer.state.epoch)
    return checkpoint


def checkpoints_by_epoch(output_dir: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of the ``checkpoint_<epoch>.pt`` files in ``output_dir``, oldest epoch first."""
    return sorted((int(m.group(1)), p) for p in Path(output_dir).glob("checkpoint_*.pt")
                  if (m := re.fullmatch(r"checkpoint_(\d+)\.pt", p.name)))


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The ``checkpoint_<epoch>.pt`` of the highest epoch in ``output_dir``, if any.

    By epoch, not by file time: after a kill -9 between saving a checkpoint and deleting the previous one,
    both exist. Checkpoints are written to a temporary name and renamed (ignite's DiskSaver), so a listed
    one is complete.
    """
    found = checkpoints_by_epoch(output_dir)
    return found[-1][1] if found else None


def save_weights(network: nn.Module, path: Path, half: bool = False) -> None:
    """Atomically save the network's state dict (fp16 when ``half``, for shipping); unwraps DDP."""
    network = getattr(network, "module", network)
    state = {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in
             network.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def attach_snapshot_averaging(trainer: Engine, network: nn.Module, output_dir: Path, start: int | None,
                              every: int = 1) -> None:
    """Keep the weights of every ``every``-th epoch from epoch ``start`` on as ``snapshot_<epoch>.pt`` and, when
    the run completes, average them into ``model_swa.pt`` (:mod:`covseg.engines.training.averaging`); ``start`` None:
    off.

    Registered before the caller's own COMPLETED handlers, so those find ``model_swa.pt`` already written.
    """
    if start is None:
        return

    @trainer.on(Events.EPOCH_COMPLETED)
    def _snapshot(engine: Engine) -> None:
        epoch = engine.state.epoch
        if epoch >= start and (epoch - start) % every == 0:
            save_weights(network, output_dir / f"snapshot_{epoch}.pt")

    @trainer.on(Events.COMPLETED)
    def _average(engine: Engine) -> None:
        snapshots = sorted(output_dir.glob("snapshot_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
        if snapshots:
            average_weights(snapshots, output_dir / "model_swa.pt")
            log.info("averaged %d snapshots into model_swa.pt", len(snapshots))
