"""Semi-supervised training with a mean teacher (Tarvainen & Valpola, NeurIPS 2017) and weak/strong views of the
unlabelled slices (FixMatch, Sohn et al., NeurIPS 2020), on the same ignite trainer as supervised training.

Every step trains the student on a batch of labelled slices and, in the same forward pass, on the *strong* view of
as many unlabelled slices (:func:`covseg.transforms.views.strong_view`). Its target there is the teacher's
probability on the *weak* view (same geometry), kept only where the teacher is sure (``bce_dice_confident``). The
teacher is the exponential moving average of the student's weights (``decay`` per step, buffers included), so its
labels improve as the student does, unlike the fixed pseudo labels of :mod:`covseg.engines.training.semi_procedure`. The
teacher is what is validated, selected and written (``model_best.pt``, ``model_final.pt``); the student's last
weights go to ``model_student.pt``. Epoch checkpoints hold the teacher too, so a killed run resumes where it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from monai.data import Dataset
from monai.transforms import Compose
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from covseg.engines.runtime.cpu import autocast_context
from covseg.engines.training.semi_supervised import run_to_end, seeded_loader
from covseg.engines.training.trainer import build_trainer
from covseg.networks.loading import load_weights
from covseg.networks.outputs import final_logits
from covseg.transforms.augment import eval_transforms, train_transforms
from covseg.transforms.views import strong_view, weak_view_transforms

log = logging.getLogger(__name__)

__all__ = ["MeanTeacher", "paired_items", "train_mean_teacher"]


class MeanTeacher:
    """The EMA teacher of a student, the strong view the student sees, and the consistency loss between them."""

    def __init__(self, student: nn.Module, decay: float = 0.99, weight: float = 1.0,
                 loss: str = "bce_dice_confident", image_size: int = 352) -> None:
        from covseg.losses import InfNetLoss

        if not 0.0 <= decay < 1.0 or weight < 0:
            raise ValueError(f"decay must be in [0, 1) and weight >= 0, got {decay}, {weight}")
        device = next(student.parameters()).device
        self.ema = AveragedModel(student, device=device, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.ema.requires_grad_(False)
        self.ema.n_averaged.fill_(1)  # already holds the student's weights: the first update is an EMA step, not a copy
        self.weight = weight
        self.loss = InfNetLoss(seg_loss=loss)
        self.view = strong_view(image_size)

    @property
    def network(self) -> nn.Module:
        """The teacher network itself (what is validated and saved)."""
        return self.ema.module

    def reseed(self, seed: int) -> None:
        """Reseed the strong view's random draws (each epoch, from the run's seed: resumed runs repeat them)."""
        self.view.set_random_state(seed=seed)

    def strong(self, weak: Tensor) -> Tensor:
        """The strong view of each slice of a (B, 1, H, W) batch of weak views."""
        return torch.stack([torch.as_tensor(self.view(image)) for image in weak.cpu()]).to(weak.device)

    @torch.no_grad()
    def targets(self, weak: Tensor, device: torch.device, bf16: bool = False) -> Tensor:
        """The teacher's probability on the weak views (eval mode, fp32)."""
        self.network.eval()
        with autocast_context(device, bf16):
            return torch.sigmoid(final_logits(self.network(weak)).float())

    def update(self, student: nn.Module) -> None:
        """One EMA step of the teacher towards the student's current weights (and buffers)."""
        self.ema.update_parameters(student)


def paired_items(labelled: Sequence[dict], unlabelled: Sequence[dict]) -> list[dict]:
    """One item per unlabelled slice, carrying a labelled slice along (cycled): ``image`` / ``label`` from the
    labelled item, ``unlabelled`` (its path) and ``unlabelled_window`` (its own window, or None)."""
    if not labelled or not unlabelled:
        raise ValueError(f"mean teacher needs labelled and unlabelled slices, got {len(labelled)} and "
                         f"{len(unlabelled)}")
    return [{"image": labelled[i % len(labelled)]["image"], "label": labelled[i % len(labelled)]["label"],
             "unlabelled": item["image"], "unlabelled_window": item.get("window")}
            for i, item in enumerate(unlabelled)]


def paired_transforms(image_size: int, strong_window_jitter: bool = True) -> Compose:
    """The labelled slice's training augmentation and the unlabelled slice's weak view, one after the other."""
    return Compose([train_transforms(image_size, strong_window_jitter), weak_view_transforms(image_size)])


def train_mean_teacher(student: nn.Module, labelled: list[dict], unlabelled: list[dict], output_dir: str | Path, *,
                       teacher_weights: str | Path | None = None, val_items: list[dict] | None = None,
                       epochs: int = 10, samples_per_epoch: int | None = 400, batch_size: int = 4,
                       lr: float = 1e-4, lr_schedule: str = "cosine", weight_decay: float = 1e-4,
                       seg_loss: str = "bce_dice", consistency_loss: str = "bce_dice_confident",
                       consistency_weight: float = 1.0, decay: float = 0.99, image_size: int = 352,
                       scales: Sequence[float] = (0.75, 1.0, 1.25), strong_window_jitter: bool = True,
                       device: str = "cpu", bf16: bool = False, seed: int = 0,
                       inferer: Callable | None = None) -> Path:
    """Train ``student`` (first loaded with ``teacher_weights`` when given: student and teacher start there) with
    a mean teacher; each epoch is ``samples_per_epoch`` pairs (labelled + unlabelled slice; None: the whole pool),
    validated on ``val_items``. Writes ``output_dir/{model_final,model_best,model_student}.pt`` and epoch
    checkpoints; the same call resumes a killed run. Returns the teacher's final weights."""
    if teacher_weights:
        load_weights(student, teacher_weights)
    student.to(device)
    teacher = MeanTeacher(student, decay, consistency_weight, consistency_loss, image_size)
    loader = seeded_loader(paired_items(labelled, unlabelled), paired_transforms(image_size, strong_window_jitter),
                           batch_size, seed, samples_per_epoch)
    val_loader = DataLoader(Dataset(val_items, eval_transforms(image_size)), batch_size=1) if val_items else None
    trainer = build_trainer(student, loader, output_dir, val_loader=val_loader, max_epochs=epochs, lr=lr,
                            weight_decay=weight_decay, lr_schedule=lr_schedule, image_size=image_size,
                            scales=scales, device=device, bf16=bf16, val_interval=1, seed=seed, seg_loss=seg_loss,
                            tensorboard=False, inferer=inferer, mean_teacher=teacher)
    log.info("mean teacher: %d labelled, %d unlabelled slices, %d epochs", len(labelled), len(unlabelled), epochs)
    run_to_end(trainer, loader, epochs)
    return Path(output_dir) / "model_final.pt"
