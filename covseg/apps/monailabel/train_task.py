"""Fine-tune covseg's infection model on the datastore's labelled volumes (MONAI Label ``BasicTrainTask``).

Each volume with a final label becomes 2D training slices prepared as inference sees them
(:mod:`covseg.apps.monailabel.training_slices`). The network starts from the newest weights (the last published
fine-tune, else the shipped bundle), trains with covseg's Inf-Net loss (structure loss on the final and side maps
plus edge BCE, :class:`covseg.losses.InfNetLoss`) in MONAI's ``SupervisedTrainer``, and the task publishes the
result to ``<app>/model/covseg_infection/model.pt``, which the infection infer task loads on its next request. The
shipped bundle's ``models/model.pt`` is only read. Experiment tracking (MLflow) is off.

Request parameters (``POST /train/covseg_infection``): ``max_epochs`` (default 5), ``lr`` (1e-4),
``train_batch_size`` (2), ``negatives_per_positive`` (1.0), ``bf16`` (``"auto"``), ``seed`` (0), ``pretrained``
(``true``: continue from the last published fine-tune; ``false``: start again from the shipped bundle).
"""

from __future__ import annotations

import filecmp
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events
from monai.engines.utils import IterationEvents
from monai.handlers import MeanDice, from_engine
from monai.inferers import SimpleInferer
from monai.transforms import Activationsd, AsDiscreted, EnsureTyped
from monai.utils import set_determinism
from monailabel.tasks.train.basic_train import BasicTrainTask, Context
from torch import nn

from covseg.apps.monailabel.infer_tasks import _flag, precision_setting
from covseg.apps.monailabel.training_slices import training_slices
from covseg.apps.monailabel.weights import load_state
from covseg.engines.inference.predictor import logits_of
from covseg.engines.runtime.cpu import autocast_context, resolve_bf16
from covseg.engines.training.train_step import edge_from_mask
from covseg.io.atomic import atomic_path
from covseg.losses import InfNetLoss
from covseg.networks.loading import load_bundle

log = logging.getLogger(__name__)

__all__ = ["CannotTrain", "InfectionTrain", "check_settings"]


class CannotTrain(ValueError):
    """A training that cannot start: a bad setting, or no usable labelled volume (reported in one line)."""


_NUMBERS = {"max_epochs": (int, 1), "train_batch_size": (int, 1), "seed": (int, 0), "lr": (float, 0.0),
            "negatives_per_positive": (float, 0.0)}  # setting: (type, least value)


def check_settings(request: dict) -> None:
    """:class:`CannotTrain` naming the first numeric train setting that is not a number of its type and range."""
    for name, (kind, least) in _NUMBERS.items():
        value = request.get(name)
        if value is None:
            continue
        try:
            number = kind(value)
            ok = number == float(value) and (number > least if name == "lr" else number >= least)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            bound = f"> {least}" if name == "lr" else f">= {least}"
            raise CannotTrain(f"{name} must be {'an integer' if kind is int else 'a number'} {bound}, not {value!r}")


class InfectionTrain(BasicTrainTask):
    """Slice-wise fine-tuning of the infection network; publishes ``<model_dir>/model.pt``."""

    def __init__(self, model_dir: str | Path, bundle: str | Path) -> None:
        self.bundle = Path(bundle)
        model_dir = Path(model_dir)
        self.published = model_dir / "model.pt"
        super().__init__(
            model_dir=str(model_dir),
            description="fine-tune covseg's infection model (Inf-Net) slice-wise on the labelled volumes",
            config={"max_epochs": 5, "lr": 1e-4, "train_batch_size": 2, "val_split": 0.0,
                    "negatives_per_positive": 1.0, "bf16": "auto", "seed": 0, "pretrained": True, "multi_gpu": False,
                    "dataset": "Dataset", "dataloader": "DataLoader", "tracking": "None"},
            amp=False,
            load_path=None,
            publish_path=None,  # published atomically by _publish() instead of MONAI Label's plain copy
            train_save_interval=1000,
            n_saved=1,
            labels={"infection": 1},
            tracking=None,
        )

    def train(self, rank: int, world_size: int, request: dict, datalist: list) -> dict:
        """Seed torch, numpy and random (``seed``, default 0) so that a training is repeatable, then train."""
        set_determinism(seed=int(request.get("seed", 0)))
        try:
            return super().train(rank, world_size, request, datalist)
        finally:
            set_determinism(seed=None)

    # ------------------------------------------------------------------------------------- data
    def pre_process(self, request: dict, datastore) -> list[dict]:
        """The datastore's labelled volumes as 2D training slices (tensors, ready to batch)."""
        check_settings(request)
        datalist = datastore.datalist()
        if not datalist:
            raise CannotTrain("no labelled volume in the datastore: save a final label first (PUT /datastore/label)")
        size = int(load_bundle(self.bundle).image_size)
        items = training_slices(datalist, size, float(request.get("negatives_per_positive", 1.0)))
        if not items:
            raise CannotTrain(f"no training slice in the {len(datalist)} labelled volume(s): each was skipped (see "
                             "the warnings above) or holds no lung")
        return items

    def train_pre_transforms(self, context: Context) -> list:
        return [EnsureTyped(keys=("image", "label"), track_meta=False)]

    def train_post_transforms(self, context: Context) -> list:
        return [Activationsd(keys="pred", sigmoid=True), AsDiscreted(keys="pred", threshold=0.5)]

    def val_pre_transforms(self, context: Context) -> list:
        return self.train_pre_transforms(context)

    def val_inferer(self, context: Context) -> SimpleInferer:
        return SimpleInferer()  # unused unless a request asks for val_split > 0

    def train_key_metric(self, context: Context) -> dict:
        return {self.TRAIN_METRIC_MEAN_DICE: MeanDice(output_transform=from_engine(["pred", "label"]),
                                                      include_background=True)}

    # ---------------------------------------------------------------------------------- network
    def network(self, context: Context) -> nn.Module:
        """The bundle's network with the newest weights (the published fine-tune unless ``pretrained`` is false)."""
        net = load_bundle(self.bundle).network
        if bool(_flag(context.request.get("pretrained"), True)) and self.published.is_file():
            load_state(net, self.published)
            log.info("fine-tuning from the published weights %s", self.published)
        else:
            log.info("fine-tuning from the shipped bundle %s", self.bundle)
        return net.train()

    def finalize(self, context: Context) -> None:
        """MONAI Label's stats handler, then publication of each new best checkpoint."""
        super().finalize(context)
        if context.local_rank == 0:
            context.trainer.add_event_handler(Events.EPOCH_COMPLETED, self._publish, Path(context.output_dir))

    def _publish(self, engine: Any, output_dir: Path) -> None:
        """Copy the run's best ``model.pt`` to the published path atomically (an infer request reading it meanwhile
        sees the old or the new file, never half of one)."""
        best = output_dir / self._key_metric_filename
        if best.is_file() and not (self.published.is_file() and filecmp.cmp(best, self.published, shallow=False)):
            with atomic_path(self.published) as tmp:
                shutil.copyfile(best, tmp)
            log.info("published %s", self.published)

    def load_path(self, output_dir: str, pretrained: bool = True) -> None:
        return None  # the starting weights are loaded by network()

    def optimizer(self, context: Context) -> torch.optim.Optimizer:
        return torch.optim.AdamW(context.network.parameters(), lr=float(context.request.get("lr", 1e-4)))

    def loss_function(self, context: Context) -> nn.Module:
        return InfNetLoss()

    def lr_scheduler_handler(self, context: Context) -> None:
        return None  # a short fine-tune at a constant learning rate

    # -------------------------------------------------------------------------------- iteration
    def train_iteration_update(self, context: Context):
        """One optimiser step on a batch of slices with covseg's deep-supervised loss (bf16 where native)."""
        loss_fn = InfNetLoss()
        bf16 = resolve_bf16(precision_setting(context.request.get("bf16")), context.device)
        log.info("training precision: %s", "bf16" if bf16 else "fp32")

        def step(engine: Any, batch: dict) -> dict:
            images = batch["image"].to(engine.state.device).float()
            masks = batch["label"].to(engine.state.device).float()
            engine.network.train()
            engine.optimizer.zero_grad(set_to_none=True)
            with autocast_context(engine.state.device, bf16):
                out = engine.network(images)
            loss = loss_fn(out, masks, edge_from_mask(masks))  # a plain tensor output ignores the edge target
            loss.backward()
            nn.utils.clip_grad_norm_(engine.network.parameters(), 10.0)
            engine.optimizer.step()
            engine.state.output = {"image": images, "label": masks, "pred": logits_of(out).detach().float(),
                                   "loss": loss.detach()}
            engine.fire_event(IterationEvents.MODEL_COMPLETED)  # decollate, post-transforms, metrics
            return engine.state.output

        return step
