"""Semi-Inf-Net as the paper trains it, in one resumable run: pseudo labels first, then the labelled fine-tune.

1. **Rounds** (:func:`covseg.engines.training.semi_supervised.train_rounds`): the seed-shuffled pool of unlabelled
   slices is cut into rounds of ``per_round`` slices (None: the whole pool in one round). In each round the labeller
   (the fixed supervised ``teacher``, or the current ``student``, which is the paper's propagation) labels the round's
   slices, then the student trains on labelled + pseudo-labelled-so-far.
2. **Fine-tune**: the last round's student is fine-tuned on the labelled slices with :func:`build_trainer`,
   validated on the validation split; its best-validation weights become ``model_final.pt`` (written atomically).
   With 0 fine-tune epochs the last round's weights are ``model_final.pt``.
3. **Blend** (optional, ``student_weight`` < 1): the final weights are ``student_weight`` x the student's +
   (1 - ``student_weight``) x the teacher's (weight-space ensembling of a network and the weights it was tuned
   from, WiSE-FT; only with ``student_init: teacher``, where both lie on one path). The student's own weights stay
   in ``model_student.pt``.

Everything lives in one output folder: ``procedure.json`` (the settings), ``student_init.pt`` (a fresh student's
first weights), ``pseudo_labels/``, ``round_NNN/`` (``slices.txt``, ``model_final.pt``, ``round.json``),
``finetune/`` and ``model_final.pt``. A killed run started again with the same arguments skips what is finished,
resumes the epoch in progress from its checkpoint, and ends with the weights an uninterrupted run would give.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from monai.data import Dataset
from torch import nn
from torch.utils.data import DataLoader

from covseg.engines.runtime.cpu import resolve_bf16
from covseg.engines.training.averaging import blend_weights
from covseg.engines.training.checkpoints import save_weights
from covseg.engines.training.semi_supervised import (
    RoundSchedule,
    copy_atomic,
    run_to_end,
    seeded_loader,
    train_rounds,
)
from covseg.engines.training.trainer import build_trainer
from covseg.io.atomic import atomic_write_text
from covseg.networks.loading import load_weights
from covseg.options import as_flag
from covseg.transforms.augment import eval_transforms, train_transforms

log = logging.getLogger(__name__)

__all__ = ["FineTune", "SemiInfNet", "build_semi_inf_net", "seeded_init"]


def seeded_init(factory: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    """``factory()`` under a fixed torch seed: the same fresh weights in every run with ``seed``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return factory()


@dataclass
class FineTune:
    """The labelled fine-tune after the rounds (the settings of ``bundles/infnet``'s last training stage)."""

    epochs: int = 20
    lr: float = 1e-4
    seg_loss: str = "bce_dice"
    strong_window_jitter: bool = False
    snapshot_start: int | None = 10
    val_interval: int = 5


@dataclass
class SemiInfNet:
    """The whole procedure's settings; :meth:`run` trains in ``output_dir`` (see the module's docstring).

    ``student``: the network to train, in its initial state (``student_init: fresh``) or to be loaded with the
    teacher's weights (``student_init: teacher``). ``teacher_weights``: the supervised weights that label (the
    first round, or every round with ``labeller: teacher``). ``labelled``: the training slices (arrays),
    ``unlabelled``: the pool (paths), ``val_items``: the validation slices (fine-tune selection, round curve).
    ``label_dir``: where the pseudo labels go (default ``output_dir/pseudo_labels``; a folder labelled earlier by
    the same teacher may be named, its labels are kept). The attribute ``max_epochs`` is the fine-tune's epochs.
    """

    student: nn.Module
    teacher_weights: str | Path | None
    labelled: list[dict]
    unlabelled: list[dict]
    output_dir: str | Path
    val_items: list[dict] | None = None
    student_init: str = "fresh"
    rounds: RoundSchedule = field(default_factory=RoundSchedule)
    finetune: FineTune = field(default_factory=FineTune)
    label_dir: str | Path | None = None
    device: str = "cpu"
    bf16: bool = False
    seed: int = 0
    inferer: Callable | None = None
    student_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.student_init not in ("fresh", "teacher"):
            raise ValueError(f"student_init must be 'fresh' or 'teacher', got {self.student_init!r}")
        if not 0.0 <= self.student_weight <= 1.0:
            raise ValueError(f"student_weight must be in [0, 1], got {self.student_weight}")
        if self.student_weight < 1.0 and self.student_init != "teacher":
            raise ValueError("student_weight < 1 blends the student with the teacher it started from: "
                             "it needs student_init 'teacher'")
        if self.teacher_weights is None and (self.student_init == "teacher" or self.rounds.labeller == "teacher"):
            raise ValueError("teacher_weights are needed for student_init 'teacher' or labeller 'teacher'")
        self.output_dir = Path(self.output_dir)

    @property
    def max_epochs(self) -> int:
        return self.finetune.epochs

    def settings(self) -> dict:
        """What defines the run (recorded in ``procedure.json``)."""
        return {"teacher_weights": str(self.teacher_weights), "student_init": self.student_init,
                "rounds": asdict(self.rounds), "finetune": asdict(self.finetune), "seed": self.seed,
                "labelled": len(self.labelled), "unlabelled": len(self.unlabelled),
                "val": len(self.val_items or []), "label_dir": str(self.label_dir) if self.label_dir else None,
                "student_weight": self.student_weight}

    def run(self) -> Path:
        """Run (or finish) the procedure; returns ``output_dir/model_final.pt``."""
        out = self.output_dir
        final = out / "model_final.pt"
        if final.exists():
            return final
        out.mkdir(parents=True, exist_ok=True)
        if not (out / "procedure.json").exists():
            atomic_write_text(out / "procedure.json", json.dumps(self.settings(), indent=1))
        self._start_student()
        teacher = None
        if self.teacher_weights is not None:
            teacher = load_weights(copy.deepcopy(self.student), self.teacher_weights).to(self.device)
        pseudo = train_rounds(self.student, self.labelled, self.unlabelled, out, self.rounds, teacher=teacher,
                              val_items=self.val_items, label_dir=self.label_dir, device=self.device, bf16=self.bf16,
                              seed=self.seed, inferer=self.inferer)
        del teacher
        best = self._finetune(pseudo) if self.finetune.epochs > 0 else pseudo
        if self.student_weight < 1.0:
            best = copy_atomic(best, out / "model_student.pt")
            log.info("Semi-Inf-Net: final weights %s = %.2f x student %s + %.2f x teacher", final,
                     self.student_weight, best, 1.0 - self.student_weight)
            return blend_weights(self.teacher_weights, best, self.student_weight, final)
        log.info("Semi-Inf-Net: final weights %s (from %s)", final, best)
        return copy_atomic(best, final)

    def _start_student(self) -> None:
        """The student's first weights: the teacher's, or the fresh ones saved once (a restart reloads them)."""
        if self.student_init == "teacher":
            load_weights(self.student, self.teacher_weights)
            return
        first = self.output_dir / "student_init.pt"
        if first.exists():
            load_weights(self.student, first)
        else:
            save_weights(self.student, first)

    def _finetune(self, pseudo: Path) -> Path:
        """Fine-tune the rounds' student on the labelled slices; the best-validation (else the last) weights."""
        ft, size = self.finetune, self.rounds.image_size
        folder = self.output_dir / "finetune"
        load_weights(self.student, pseudo)
        loader = seeded_loader(self.labelled, train_transforms(size, ft.strong_window_jitter),
                               self.rounds.batch_size, self.seed)
        val_loader = DataLoader(Dataset(self.val_items, eval_transforms(size)), batch_size=1) \
            if self.val_items else None
        trainer = build_trainer(self.student, loader, folder, val_loader=val_loader, max_epochs=ft.epochs,
                                lr=ft.lr, weight_decay=self.rounds.weight_decay, image_size=size,
                                scales=self.rounds.scales, device=self.device, bf16=self.bf16,
                                val_interval=ft.val_interval, seed=self.seed, snapshot_start=ft.snapshot_start,
                                seg_loss=ft.seg_loss, inferer=self.inferer)
        print(f"fine-tune: {len(self.labelled)} labelled slices, {ft.epochs} epochs", flush=True)
        run_to_end(trainer, loader, ft.epochs)
        best = folder / "model_best.pt"
        return best if best.exists() else folder / "model_final.pt"


def build_semi_inf_net(student: nn.Module, teacher_weights: str | Path | None, labelled: list[dict],
                     unlabelled: list[dict], output_dir: str | Path, *, val_items: list[dict] | None = None,
                     student_init: str = "fresh", labeller: str = "teacher", per_round: int | None = None,
                     samples_per_round: int | None = None, pseudo_epochs: int = 3, pseudo_lr: float = 3e-4,
                     pseudo_lr_schedule: str = "cosine", pseudo_seg_loss: str = "bce_dice",
                     pseudo_strong_window_jitter: bool = True, pseudo_passes: int = 1, max_epochs: int = 20,
                     finetune_lr: float = 1e-4, finetune_seg_loss: str = "bce_dice",
                     finetune_strong_window_jitter: bool = False,
                     snapshot_start: int | None = 10, val_interval: int = 5, image_size: int = 352,
                     batch_size: int = 6, weight_decay: float = 1e-4, scales=(0.75, 1.0, 1.25), tta: bool = False,
                     threshold: float | None = 0.5, keep_round_weights: bool = True,
                     label_dir: str | Path | None = None, device: str | None = None, bf16: bool | str = "auto",
                     seed: int = 0, inferer: Callable | None = None, student_weight: float = 1.0) -> SemiInfNet:
    """The procedure from flat keyword options (the bundle's ``train#trainer`` and ``scripts/train_long.py``);
    ``.run()`` trains. ``pseudo_passes``: how many times the rounds are run (:class:`RoundSchedule`'s ``passes``).
    ``max_epochs``: the fine-tune's epochs (0: none). ``student_weight`` < 1: the final weights blend the student
    with the teacher (WiSE-FT, step 3 of the module's docstring). ``device`` None: CUDA when available, else the CPU;
    ``bf16`` ``"auto"``: :func:`covseg.engines.runtime.cpu.resolve_bf16`.

    Defaults: the teacher labels the whole pool in one round, a fresh student trains 3 epochs on labelled +
    pseudo-labelled at lr 3e-4 (cosine, BCE + Dice), then 20 labelled epochs at lr 1e-4 (BCE + Dice, mild window
    jitter, validation every 5 epochs, snapshots from epoch 10 averaged into ``finetune/model_swa.pt``).
    """
    rounds = RoundSchedule(per_round=per_round, samples_per_round=samples_per_round, epochs=pseudo_epochs,
                           lr=pseudo_lr, lr_schedule=pseudo_lr_schedule, weight_decay=weight_decay,
                           seg_loss=pseudo_seg_loss,
                           strong_window_jitter=as_flag(pseudo_strong_window_jitter, "pseudo_strong_window_jitter"),
                           batch_size=batch_size, image_size=image_size, scales=tuple(scales), labeller=labeller,
                           tta=as_flag(tta, "tta"), threshold=threshold,
                           keep_round_weights=as_flag(keep_round_weights, "keep_round_weights"),
                           passes=int(pseudo_passes))
    finetune = FineTune(epochs=max_epochs, lr=finetune_lr, seg_loss=finetune_seg_loss,
                        strong_window_jitter=as_flag(finetune_strong_window_jitter, "finetune_strong_window_jitter"),
                        snapshot_start=snapshot_start, val_interval=val_interval)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return SemiInfNet(student, teacher_weights, labelled, unlabelled, output_dir, val_items=val_items,
                      student_init=student_init, rounds=rounds, finetune=finetune, label_dir=label_dir,
                      device=device, bf16=resolve_bf16(bf16, device), seed=seed, inferer=inferer,
                      student_weight=float(student_weight))
