"""Supervised training of covseg's 2D networks on pytorch-ignite: multi-scale steps, deep supervision,
validation on a split of the labelled slices, checkpoints that resume after a kill, TensorBoard, progress bars.

Binary networks (``num_classes=1``: one sigmoid channel, 0/1 float masks) and C-class networks (``num_classes=C``:
softmax logits, class-index masks (B, 1, H, W)) share the same step, schedule, checkpoints and selection.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import ignite.distributed as idist
import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver, ProgressBar
from torch import Tensor, nn
from torch.utils.data import DataLoader

from covseg.engines.runtime.cpu import autocast_context
from covseg.engines.training.averaging import average_weights
from covseg.engines.training.seeding import epoch_seed, follow_epochs, reseed_each_epoch
from covseg.io.atomic import atomic_path, atomic_write_text
from covseg.metrics.multiclass import ClassToolbox, class_scores, mean_foreground
from covseg.networks.outputs import DeepSupervisionOutput, split_output
from covseg.options import as_flag

if TYPE_CHECKING:
    from covseg.engines.training.mean_teacher import MeanTeacher

log = logging.getLogger(__name__)

LR_SCHEDULES = ("cosine", "poly", "constant")


def edge_from_mask(mask: Tensor, width: int = 3) -> Tensor:
    """Binary edge band of a (B, 1, H, W) mask: dilation minus erosion with a ``width`` square."""
    dilated = F.max_pool2d(mask, width, stride=1, padding=width // 2)
    eroded = -F.max_pool2d(-mask, width, stride=1, padding=width // 2)
    return (dilated - eroded).clamp(0, 1)


def resize_masks(masks: Tensor, size: int, num_classes: int = 1) -> Tensor:
    """Masks (B, 1, H, W) at ``size``²: class indices nearest; binary masks bilinear then thresholded at 0.5, so they
    stay 0/1; soft masks (any value strictly between 0 and 1: soft pseudo labels) bilinear, so they stay soft."""
    if num_classes > 1:
        return F.interpolate(masks, size=(size, size), mode="nearest")
    resized = F.interpolate(masks, size=(size, size), mode="bilinear", align_corners=False)
    binary = ((masks == 0) | (masks == 1)).flatten(1).all(dim=1).view(-1, 1, 1, 1)
    return torch.where(binary, (resized > 0.5).float(), resized)


def scaled_size(base: int, rate: float, multiple: int = 32) -> int:
    """``base * rate`` rounded to a multiple of the network's largest stride."""
    return max(multiple, int(round(base * rate / multiple)) * multiple)


def make_train_step(network: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module, device: torch.device,
                    image_size: int = 352, scales: Sequence[float] = (0.75, 1.0, 1.25), all_scales: bool = False,
                    bf16: bool = False, channels_last: bool = False, grad_clip: float = 10.0, num_classes: int = 1,
                    inferer: Callable | None = None, mean_teacher: MeanTeacher | None = None):
    """An ignite process function: one batch at one random scale (or every scale, as the paper's code does).

    ``inferer(x, network)`` (e.g. MONAI's ``SimpleInferer``, the bundle's ``train#inferer``), when given, runs the
    forward pass.
    ``num_classes`` 1: masks are 0/1 floats and deep-supervised outputs also get the mask's edge band; C > 1:
    masks are class indices, resized by nearest neighbour.
    ``mean_teacher`` (binary only): the batch also holds ``unlabelled`` weak views; their strong views join the
    forward pass, the teacher's confident probabilities on the weak views are their targets (weighted by
    ``mean_teacher.weight``), and the teacher takes one EMA step after each optimiser step.
    """

    def step(engine: Engine, batch: dict) -> dict:
        network.train()
        images = batch["image"].to(device)
        masks = batch["label"].to(device).float()
        weak = batch["unlabelled"].to(device) if mean_teacher is not None else None
        strong = mean_teacher.strong(weak) if mean_teacher is not None else None
        rates = list(scales) if all_scales else [random.choice(list(scales))]
        total = 0.0
        for rate in rates:
            size = scaled_size(image_size, rate)
            x = _resized(images, size)
            y = masks if size == masks.shape[-1] else resize_masks(masks, size, num_classes)
            targets = None
            if mean_teacher is not None:
                weak_x, strong_x = (_resized(v, size) for v in (weak, strong))
                targets = mean_teacher.targets(weak_x, device, bf16)
                x = torch.cat([x, strong_x])
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            with autocast_context(device, bf16):
                out = network(x) if inferer is None else inferer(x, network)
            if targets is not None:
                out, out_unlabelled = split_output(out, len(y))
            loss = _map_loss(loss_fn, out, y, num_classes)
            if targets is not None:
                loss = loss + mean_teacher.weight * _map_loss(mean_teacher.loss, out_unlabelled, targets, 1)
            loss.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(network.parameters(), grad_clip)
            optimizer.step()
            if mean_teacher is not None:
                mean_teacher.update(network)
            total += float(loss.detach())
        return {"loss": total / len(rates)}

    return step


def _resized(images: Tensor, size: int) -> Tensor:
    """Images (B, C, H, W) at ``size``² (bilinear), or as they are."""
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def _map_loss(loss_fn: nn.Module, out: object, y: Tensor, num_classes: int) -> Tensor:
    """The loss of one output; a binary deep-supervised output also gets the edge band of the target's 0.5
    contour."""
    if isinstance(out, DeepSupervisionOutput) and num_classes == 1:
        return loss_fn(out, y, edge_from_mask((y >= 0.5).to(y.dtype)))
    return loss_fn(out, y)


@torch.inference_mode()
def validate(network: nn.Module, loader: DataLoader, device: torch.device, bf16: bool = False,
             num_classes: int = 1) -> dict[str, float]:
    """Validation figures, each slice scored at its own mask size; ``val_dice`` is the selection figure.

    Binary: mean Dice at 0.5 and MAE. C classes: the toolbox meanDic of each foreground class's softmax map
    (``val_dice_<class>``; ``val_dice`` is their mean, the figure the paper's multi-class table reports) and the
    argmax-label Dice per class (``val_label_dice_<class>``).
    """
    if num_classes > 1:
        return _validate_classes(network, loader, device, bf16, num_classes)
    network.eval()
    dices, maes = [], []
    for batch in loader:
        with autocast_context(device, bf16):
            logits = network(batch["image"].to(device))
        for logit, mask in zip(logits, batch["label"]):
            prob = torch.sigmoid(F.interpolate(logit[None].float(), size=mask.shape[-2:], mode="bilinear",
                                               align_corners=False))[0].cpu()
            pred, gt = prob >= 0.5, mask > 0.5
            inter = (pred & gt).sum().item()
            denom = pred.sum().item() + gt.sum().item()
            dices.append(1.0 if denom == 0 else 2 * inter / denom)
            maes.append((prob - gt.float()).abs().mean().item())
    network.train()
    n = max(len(dices), 1)
    return {"val_dice": sum(dices) / n, "val_mae": sum(maes) / n}


def _validate_classes(network: nn.Module, loader: DataLoader, device: torch.device, bf16: bool,
                      num_classes: int) -> dict[str, float]:
    network.eval()
    toolbox = ClassToolbox(num_classes)
    label_counts: dict[str, list[float]] = {}
    for batch in loader:
        with autocast_context(device, bf16):
            logits = network(batch["image"].to(device))
        for logit, mask in zip(logits, batch["label"]):
            probs = torch.softmax(F.interpolate(logit[None].float(), size=mask.shape[-2:], mode="bilinear",
                                                align_corners=False), dim=1)[0].cpu().numpy()
            gt = mask[0].cpu().numpy().astype(np.int64)
            toolbox.add(probs, gt)
            for name, sc in class_scores(probs.argmax(0), gt, num_classes).items():
                label_counts.setdefault(name, []).append(sc["dice"])
    network.train()
    figures = toolbox.figures()
    scores = {"val_dice": mean_foreground(figures)}
    scores.update({f"val_dice_{name}": f["meanDic"] for name, f in figures.items()})
    scores.update({f"val_label_dice_{name}": float(np.mean(v)) for name, v in label_counts.items()})
    return scores


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


