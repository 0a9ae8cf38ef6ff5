"""Seeded training: every epoch's random draws (order, augmentation, dropout) follow from the run's seed alone.

MONAI's random transforms hold their own ``RandomState``, seeded from the operating system when made, so seeding
torch and Python is not enough: :func:`reseed_each_epoch` also reseeds the loader's transforms as each epoch
starts. With the epoch checkpoints of :func:`covseg.engines.training.trainer.build_trainer` a killed and resumed run
then computes what an uninterrupted one computes, and two runs of one command agree (same device and precision).
"""

from __future__ import annotations

import random

import numpy as np
import torch
from ignite.engine import Engine, Events
from torch.utils.data import DataLoader

__all__ = ["epoch_seed", "follow_epochs", "reseed_each_epoch"]


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 32-bit seed for one epoch of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def reseed_each_epoch(trainer: Engine, loader: DataLoader, seed: int) -> Engine:
    """Reseed Python, NumPy, torch and the loader's transforms as each epoch starts, from ``seed`` and the epoch."""

    @trainer.on(Events.EPOCH_STARTED)
    def _reseed(engine: Engine) -> None:
        value = epoch_seed(seed, engine.state.epoch)
        random.seed(value)
        np.random.seed(value)
        torch.manual_seed(value)
        transform = getattr(getattr(loader, "dataset", None), "transform", None)
        if hasattr(transform, "set_random_state"):
            transform.set_random_state(seed=value)

    return trainer


def follow_epochs(trainer: Engine, loader: DataLoader) -> Engine:
    """Tell the loader's sampler which epoch starts, when it draws by epoch (``set_epoch``: a DistributedSampler,
    :class:`covseg.engines.training.sampling.SourceBalancedSampler`); other samplers are left alone."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        trainer.add_event_handler(Events.EPOCH_STARTED, lambda engine: sampler.set_epoch(engine.state.epoch))
    return trainer
