"""Supervised training of covseg's 2D networks on pytorch-ignite: :func:`build_trainer` assembles the optimiser,
learning-rate schedule, step (:mod:`covseg.engines.training.train_step`), validation and best-weights selection
(:mod:`covseg.engines.training.validation`), checkpoints that resume after a kill
(:mod:`covseg.engines.training.checkpoints`), TensorBoard and progress bars.

Binary networks (``num_classes=1``: one sigmoid channel, 0/1 float masks) and C-class networks (``num_classes=C``:
softmax logits, class-index masks (B, 1, H, W)) share the same step, schedule, checkpoints and selection.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar
from torch import nn
from torch.utils.data import DataLoader

from covseg.engines.training.checkpoints import (
    ResumableEngine,
    attach_checkpoints,
    attach_snapshot_averaging,
    save_weights,
)
from covseg.engines.training.seeding import epoch_seed, follow_epochs, reseed_each_epoch
from covseg.engines.training.train_step import make_train_step
from covseg.engines.training.validation import validate
from covseg.io.atomic import atomic_write_text
from covseg.options import as_flag

if TYPE_CHECKING:
    from covseg.engines.training.mean_teacher import MeanTeacher

__all__ = ["LR_SCHEDULES", "build_trainer", "check_training_options"]

log = logging.getLogger(__name__)

LR_SCHEDULES = ("cosine", "poly", "constant")


def check_training_options(max_epochs: int, lr: float, val_interval: int = 1, lr_schedule: str = "cosine",
                           image_size: int = 352) -> None:
    """Raise ``ValueError("<option> ...")`` for option values no training can run with (the bundles' overrides
    reach here as given: ``--max_epochs -1`` would otherwise write untrained weights as ``model_final.pt``)."""
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
        raise ValueError(f"max_epochs must be a whole number >= 1, got {max_epochs!r}")
    if isinstance(val_interval, bool) or not isinstance(val_interval, int) or val_interval < 1:
        raise ValueError(f"val_interval must be a whole number >= 1, got {val_interval!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0 or not math.isfinite(lr):
        raise ValueError(f"lr must be a number > 0, got {lr!r}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {lr_schedule!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32:
        raise ValueError(f"image_size must be a whole number >= 32 (the networks' largest stride), got {image_size!r}")


def build_trainer(network: nn.Module, train_loader: DataLoader, output_dir: str | Path, *,
                  val_loader: DataLoader | None = None, max_epochs: int = 100, lr: float = 1e-4,
                  weight_decay: float = 0.0, lr_schedule: str = "cosine", image_size: int = 352,
                  scales: Sequence[float] = (0.75, 1.0, 1.25), all_scales: bool = False,
                  loss_fn: nn.Module | None = None, device: str | torch.device = "cpu", bf16: bool = False,
                  channels_last: bool = False, val_interval: int = 5, resume: bool = True,
                  tensorboard: bool = True, progress: bool = True, seed: int = 0,
                  snapshot_start: int | None = None, snapshot_every: int = 5, seg_loss: str | None = None,
                  num_classes: int = 1, class_weights: Sequence[float] | None = None,
                  inferer: Callable | None = None, mean_teacher: MeanTeacher | None = None) -> Engine:
    """Assemble the ignite trainer with optimiser, schedule, validation, checkpoints and logging.

    ``output_dir`` receives ``checkpoint_*.pt`` (everything needed to resume, the newest two; the newest is loaded
    when ``resume``, and a run resumed at its last epoch trains nothing: :class:`ResumableEngine`),
    ``model_best.pt`` (network weights with the best validation Dice; none without validation slices) and
    ``model_final.pt``. Unusable option values are refused first (:func:`check_training_options`).
    With ``snapshot_start``, the weights of every ``snapshot_every``-th epoch from that epoch on are kept as
    ``snapshot_<epoch>.pt`` and averaged into ``model_swa.pt`` at the end (:mod:`covseg.engines.training.averaging`).
    Without ``loss_fn``, the loss is :class:`covseg.losses.InfNetLoss` with ``seg_loss`` per map: a binary loss
    (:func:`covseg.losses.segmentation_loss`, default ``structure``) or, for ``num_classes`` > 1, a softmax loss
    (:func:`covseg.losses.multiclass.multiclass_loss`, default ``ce_dice``, optional ``class_weights``).
    ``lr_schedule``: ``cosine`` (to 1 % of ``lr``), ``poly`` ((1 - t)^0.9, the FCN / DeepLab schedule) or constant.
    ``inferer`` (``inferer(x, network)``, the bundle's ``train#inferer``) runs the training forward pass when given.
    ``mean_teacher`` (:class:`covseg.engines.training.mean_teacher.MeanTeacher`): the loader's batches carry
    unlabelled weak views too; the teacher is checkpointed, validated, selected and written as ``model_best.pt`` /
    ``model_final.pt`` (the student's validation Dice is logged as ``student_val_dice``, its last weights go to
    ``model_student.pt``).
    """
    from covseg.losses import InfNetLoss
    from covseg.losses.multiclass import multiclass_loss

    all_scales, channels_last = as_flag(all_scales, "all_scales"), as_flag(channels_last, "channels_last")
    check_training_options(max_epochs, lr, val_interval, lr_schedule, image_size)
    if val_loader is not None and len(val_loader.dataset) == 0:  # no more labelled slices than val_count
        log.warning("no validation slices: model_best.pt is not written")
        val_loader = None
    rank = idist.get_rank()
    torch.manual_seed(seed + rank)
    random.seed(seed + rank)
    device = torch.device(device)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    network.to(device)
    if channels_last:
        network.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(len(train_loader), 1)
    total_steps = max_epochs * steps_per_epoch
    if lr_schedule == "cosine":
        def factor(step: int) -> float:
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    elif lr_schedule == "poly":
        def factor(step: int) -> float:
            return max(1.0 - min(step, total_steps) / total_steps, 0.0) ** 0.9
    else:  # constant
        def factor(step: int) -> float:
            return 1.0
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if loss_fn is None and num_classes > 1:
        loss_fn = InfNetLoss(edge_weight=0.0, seg_loss=multiclass_loss(seg_loss or "ce_dice", class_weights))
    step = make_train_step(network, optimizer, loss_fn or InfNetLoss(seg_loss=seg_loss or "structure"), device,
                           image_size, scales, all_scales, bf16, channels_last, num_classes=num_classes,
                           inferer=inferer, mean_teacher=mean_teacher)
    trainer = reseed_each_epoch(ResumableEngine(step), train_loader, seed + rank)
    scored = network if mean_teacher is None else mean_teacher.network  # what is validated, selected and written
    if mean_teacher is not None:
        trainer.add_event_handler(Events.EPOCH_STARTED,
                                  lambda engine: mean_teacher.reseed(epoch_seed(seed + rank + 1, engine.state.epoch)))
    best_file = output_dir / "best.json"
    best = {"val_dice": json.loads(best_file.read_text())["val_dice"] if best_file.exists() else -1.0}
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: scheduler.step())
    follow_epochs(trainer, train_loader)  # DistributedSampler: a new shuffle each epoch

    to_save = {"network": network, "optimizer": optimizer, "scheduler": scheduler, "trainer": trainer}
    if mean_teacher is not None:
        to_save["teacher"] = mean_teacher.ema
    attach_checkpoints(trainer, to_save, output_dir, device, resume, rank)

    writer = None
    if tensorboard and rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(output_dir / "tensorboard"))

        @trainer.on(Events.ITERATION_COMPLETED(every=10))
        def _log_loss(engine: Engine) -> None:
            writer.add_scalar("train/loss", engine.state.output["loss"], engine.state.iteration)
            writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], engine.state.iteration)

    if progress and rank == 0:
        ProgressBar(persist=False).attach(trainer, output_transform=lambda out: {"loss": out["loss"]})

    @trainer.on(Events.EPOCH_COMPLETED)
    def _epoch_done(engine: Engine) -> None:
        epoch = engine.state.epoch
        msg = f"epoch {epoch}/{engine.state.max_epochs} loss {engine.state.output['loss']:.4f}"
        if val_loader is not None and (epoch % val_interval == 0 or epoch == engine.state.max_epochs):
            scores = validate(scored, val_loader, device, bf16, num_classes)
            if mean_teacher is not None:
                scores["student_val_dice"] = validate(network, val_loader, device, bf16)["val_dice"]
            msg += "".join(f" {k} {v:.4f}" for k, v in scores.items())
            if writer is not None:
                for key, value in scores.items():
                    writer.add_scalar(f"val/{key}", value, epoch)
            if scores["val_dice"] > best["val_dice"]:
                best["val_dice"] = scores["val_dice"]
                if rank == 0:
                    save_weights(scored, output_dir / "model_best.pt")
                    atomic_write_text(best_file, json.dumps({**scores, "epoch": epoch}))
                msg += " (best)"
        if rank == 0:
            log.info(msg)
            print(msg, flush=True)

    if rank == 0:
        attach_snapshot_averaging(trainer, scored, output_dir, snapshot_start, snapshot_every)

    @trainer.on(Events.COMPLETED)
    def _finish(engine: Engine) -> None:
        if rank == 0:
            save_weights(scored, output_dir / "model_final.pt")
            if mean_teacher is not None:
                save_weights(network, output_dir / "model_student.pt")
        if writer is not None:
            writer.close()

    return trainer
