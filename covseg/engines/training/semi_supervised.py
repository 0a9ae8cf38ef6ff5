"""Semi-Inf-Net's randomly selected propagation (Fan et al. 2020, Algorithm 1) on pytorch-ignite.

Round after round, the current model labels ``per_round`` slices drawn at random from the unlabelled pool, they
join the training set, and the model is fine-tuned on the enlarged set, until the pool is empty. The paper uses
``per_round = 5`` (320 rounds, ~50 GPU-hours); on a CPU a larger ``per_round`` and a fixed number of training
samples per round keep the same procedure affordable. Each round fine-tunes with :func:`build_trainer` in its own
folder, so a killed run resumes at the round it was in, from its last epoch, and every epoch's randomness is
reseeded from (seed, round, epoch), so the resumed run ends where an uninterrupted one would; pseudo labels are
0/255 PNGs named like their slice, written atomically, and are never re-predicted once written.

:func:`train_rounds` is the round loop (the current student or a fixed teacher labels); :func:`run_propagation`
runs it as Algorithm 1, :mod:`covseg.engines.training.semi_procedure` as the whole Semi-Inf-Net procedure.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import Dataset
from monai.transforms import Compose
from torch import nn
from torch.utils.data import DataLoader

from covseg.engines.inference.predictor import SlicePredictor
from covseg.engines.training.sampling import EpochSampler
from covseg.engines.training.trainer import build_trainer
from covseg.io.atomic import atomic_path, atomic_write_text
from covseg.io.slices import pseudo_labelled_items, read_grey, write_grey
from covseg.networks.loading import load_weights
from covseg.transforms.augment import eval_transforms, train_transforms
from covseg.transforms.intensity import rewindow

log = logging.getLogger(__name__)

__all__ = ["RoundSchedule", "plan_rounds", "run_propagation", "run_to_end",
           "label_slices", "seeded_loader", "train_rounds", "write_pseudo_labels"]


def write_pseudo_labels(predictor: SlicePredictor, items: list[dict], out_dir: str | Path,
                        threshold: float | None = 0.5) -> list[dict]:
    """Label ``items`` (``{"name", "image": path}``) with ``predictor``; write ``out_dir/<name>.png`` (0/255, or
    with ``threshold`` None the probability itself, 8-bit: soft labels).

    An item with a ``window`` is labelled in the SemiSeg window (:func:`covseg.transforms.intensity.rewindow`).
    Slices already labelled in ``out_dir`` are kept as they are. A slice that cannot be read is logged (one line,
    naming the file) and left out. Returns the items that have a pseudo label, with ``"label"`` set to its path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = pseudo_labelled_items(items, out_dir)
    labelled = {it["name"] for it in done}
    todo = [it for it in items if it["name"] not in labelled]
    for start in range(0, len(todo), predictor.batch_size):  # read one batch at a time: the pool stays on disk
        chunk = []
        for item in todo[start:start + predictor.batch_size]:
            try:
                grey = read_grey(Path(item["image"]))
                chunk.append((item, grey if item.get("window") is None else rewindow(grey, item["window"])))
            except (OSError, ValueError) as exc:
                log.warning("%s: skipped, not a readable slice (%s)", item["image"], exc)
        for (item, _), prob in zip(chunk, predictor.predict([grey for _, grey in chunk])):
            soft = prob[0] if threshold is None else (prob[0] >= threshold).astype(np.float32)
            target = write_grey(out_dir / f"{item['name']}.png", soft)
            done.append({**item, "label": str(target)})
    return done


def seeded_loader(items: list[dict], transform: Compose, batch_size: int, seed: int,
                  num_samples: int | None = None) -> DataLoader:
    """A one-process training loader whose draws (order and augmentation) depend only on ``seed`` and the epoch,
    once its trainer reseeds each epoch (:func:`covseg.engines.training.trainer.build_trainer` does)."""
    sampler = EpochSampler(len(items), num_samples, seed)
    return DataLoader(Dataset(items, transform), batch_size=batch_size, sampler=sampler, num_workers=0,
                      generator=torch.Generator().manual_seed(seed))


def run_to_end(trainer: Engine, loader: DataLoader, max_epochs: int) -> None:
    """``trainer.run`` that finishes a trainer resumed from its last epoch's checkpoint instead of restarting it
    (ignite starts a finished state over; a kill between that checkpoint and the end left no final weights)."""
    if trainer.state.max_epochs is not None and trainer.state.epoch >= max_epochs:
        trainer.fire_event(Events.COMPLETED)
    else:
        trainer.run(loader, max_epochs=max_epochs)


def plan_rounds(pool: list[dict], per_round: int | None, seed: int) -> list[list[dict]]:
    """The pool shuffled with ``seed`` and cut into rounds of ``per_round`` slices (None: one round)."""
    if per_round is not None and per_round < 1:
        raise ValueError(f"per_round must be >= 1 or null, got {per_round}")
    pool = list(pool)
    random.Random(seed).shuffle(pool)
    size = per_round or max(len(pool), 1)
    return [pool[i:i + size] for i in range(0, len(pool), size)]


@dataclass
class RoundSchedule:
    """How each round labels its slices and trains the student.

    ``samples_per_round``: one epoch of that many samples per round; None: ``epochs`` epochs over the enlarged set.
    ``labeller``: ``student`` (the current student labels; the teacher labels round 1 when one is given: the
    paper's propagation) or ``teacher`` (the fixed teacher labels every round).
    ``keep_round_weights``: False keeps only the newest finished round's weights (320 rounds of Inf-Net
    weights would take 40 GB). ``passes``: the whole sequence of rounds is run this many times; later passes
    label nothing new (a slice is never relabelled) and train again from the previous round's weights, each
    round with a fresh learning-rate schedule.
    """

    per_round: int | None = None
    samples_per_round: int | None = None
    epochs: int = 1
    lr: float = 1e-4
    lr_schedule: str = "constant"
    weight_decay: float = 1e-4
    seg_loss: str = "bce_dice"
    strong_window_jitter: bool = True
    batch_size: int = 6
    image_size: int = 352
    scales: tuple[float, ...] = (0.75, 1.0, 1.25)
    labeller: str = "student"
    tta: bool = False
    threshold: float | None = 0.5  # None: soft labels (the labeller's probability)
    keep_round_weights: bool = True
    passes: int = 1

    def __post_init__(self) -> None:
        if self.labeller not in ("student", "teacher"):
            raise ValueError(f"labeller must be 'student' or 'teacher', got {self.labeller!r}")
        if (self.samples_per_round is not None and self.samples_per_round < 1) or self.epochs < 1:
            raise ValueError(f"samples_per_round and epochs must be >= 1, got {self.samples_per_round}, "
                             f"{self.epochs}")
        if self.passes < 1:
            raise ValueError(f"passes must be >= 1, got {self.passes}")


def train_rounds(student: nn.Module, labelled: list[dict], unlabelled: list[dict], output_dir: str | Path,
                 schedule: RoundSchedule, *, teacher: nn.Module | None = None, val_items: list[dict] | None = None,
                 label_dir: str | Path | None = None, device: str = "cpu", bf16: bool = False, seed: int = 0,
                 inferer: Callable | None = None) -> Path:
    """Label round after round of the shuffled pool and train ``student`` on labelled + pseudo-labelled-so-far.

    Round ``NNN`` writes ``round_NNN/slices.txt`` (the pool slices it draws) before labelling, its pseudo labels
    into ``label_dir`` (default ``output_dir/pseudo_labels``), then trains with :func:`build_trainer` in
    ``round_NNN`` (seed ``seed + NNN``; validation on ``val_items`` after every epoch) and writes
    ``round_NNN/model_final.pt`` and ``round_NNN/round.json``. A restart skips finished rounds, resumes the
    interrupted one from its last epoch checkpoint (the result equals an uninterrupted run's), and never relabels
    a slice. Returns the last round's weights.
    """
    output_dir = Path(output_dir)
    label_dir = Path(label_dir) if label_dir else output_dir / "pseudo_labels"
    rounds = plan_rounds(unlabelled, schedule.per_round, seed) * schedule.passes
    val_loader = DataLoader(Dataset(val_items, eval_transforms(schedule.image_size)), batch_size=1) \
        if val_items else None
    enlarged: dict[str, dict] = {}  # pseudo-labelled so far, by slice name (a later pass adds nothing new)
    previous: Path | None = None
    for number, chosen in enumerate(rounds, start=1):
        round_dir = output_dir / f"round_{number:03d}"
        _claim_slices(round_dir, chosen)
        if (round_dir / "model_final.pt").exists() or (round_dir / "round.json").exists():  # finished earlier
            enlarged.update((i["name"], i) for i in pseudo_labelled_items(chosen, label_dir))
            previous = _close_round(round_dir, previous, number, chosen, len(labelled) + len(enlarged), schedule)
            continue
        if previous is not None:  # every round starts from the weights on disk, resumed or not
            load_weights(student, previous)
        use_teacher = teacher is not None and (schedule.labeller == "teacher" or number == 1)
        new = label_slices(teacher if use_teacher else student, chosen, label_dir, image_size=schedule.image_size,
                           tta=schedule.tta, threshold=schedule.threshold, device=device, bf16=bf16)
        enlarged.update((i["name"], i) for i in new)
        train_set = labelled + list(enlarged.values())
        transforms = train_transforms(schedule.image_size, schedule.strong_window_jitter,
                                      soft_labels=schedule.threshold is None)
        loader = seeded_loader(train_set, transforms,
                               schedule.batch_size, seed + number, schedule.samples_per_round)
        epochs = 1 if schedule.samples_per_round else schedule.epochs
        trainer = build_trainer(student, loader, round_dir, val_loader=val_loader, max_epochs=epochs,
                                lr=schedule.lr, weight_decay=schedule.weight_decay, lr_schedule=schedule.lr_schedule,
                                image_size=schedule.image_size, scales=schedule.scales, device=device, bf16=bf16,
                                val_interval=1, seed=seed + number, seg_loss=schedule.seg_loss, tensorboard=False,
                                inferer=inferer)
        log.info("round %d/%d: %d labelled + %d pseudo-labelled slices", number, len(rounds), len(labelled),
                 len(enlarged))
        print(f"round {number}/{len(rounds)}: training set {len(train_set)} slices", flush=True)
        started = time.perf_counter()
        run_to_end(trainer, loader, epochs)
        previous = _close_round(round_dir, previous, number, chosen, len(train_set), schedule,
                                time.perf_counter() - started)
    if previous is None:
        raise ValueError(f"{output_dir}: no round was run (is the unlabelled pool empty?)")
    write_round_curve(output_dir, len(rounds))
    return previous


def write_round_curve(output_dir: Path, count: int) -> Path:
    """``rounds.csv``: one row per round (slices, training set, seconds, best-epoch validation Dice and MAE)."""
    rows = ["round,slices,train_size,seconds,val_dice,val_mae"]
    for number in range(1, count + 1):
        rec = json.loads((output_dir / f"round_{number:03d}" / "round.json").read_text())
        val = rec["val"] or {}
        rows.append(",".join(str(v if v is not None else "") for v in (
            rec["round"], rec["slices"], rec["train_size"], rec["seconds"] and round(rec["seconds"], 1),
            val.get("val_dice"), val.get("val_mae"))))
    target = output_dir / "rounds.csv"
    atomic_write_text(target, "\n".join(rows) + "\n")
    return target


def label_slices(labeller: nn.Module, items: list[dict], label_dir: str | Path, *, image_size: int = 352,
                 tta: bool = False, threshold: float | None = 0.5, device: str = "cpu",
                 bf16: bool = False) -> list[dict]:
    """Pseudo labels of ``items`` by ``labeller`` (only those not labelled yet are predicted; ``threshold`` None:
    soft labels)."""
    label_dir = Path(label_dir)
    if len(pseudo_labelled_items(items, label_dir)) == len(items):
        return pseudo_labelled_items(items, label_dir)
    predictor = SlicePredictor(labeller, image_size=image_size, device=device, batch_size=8, bf16=bf16,
                               channels_last=False, tta=tta)
    return write_pseudo_labels(predictor, items, label_dir, threshold)


def _claim_slices(round_dir: Path, chosen: list[dict]) -> None:
    """Write the round's slice names, or check them against those of the run being resumed."""
    names = "".join(f"{item['name']}\n" for item in chosen)
    listing = round_dir / "slices.txt"
    if listing.exists():
        if listing.read_text() != names:
            raise ValueError(f"{listing}: this folder holds a run with another pool, seed or per_round")
        return
    round_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(listing, names)


def _close_round(round_dir: Path, previous: Path | None, number: int, chosen: list[dict], train_size: int,
                 schedule: RoundSchedule, seconds: float | None = None) -> Path:
    """Record a finished round (``round.json``: its size, time and best-epoch validation), drop its checkpoints and
    best-epoch weights (and the previous round's weights unless kept)."""
    record = round_dir / "round.json"
    if not record.exists():
        best = round_dir / "best.json"
        atomic_write_text(record, json.dumps({
            "round": number, "slices": len(chosen), "train_size": train_size, "seconds": seconds,
            "val": json.loads(best.read_text()) if best.exists() else None}))
    for checkpoint in round_dir.glob("checkpoint_*.pt"):  # the round is done: only its weights are needed
        checkpoint.unlink()
    (round_dir / "model_best.pt").unlink(missing_ok=True)  # rounds are not selected on validation
    if not schedule.keep_round_weights and previous is not None and previous.parent != round_dir:
        previous.unlink(missing_ok=True)
    final = round_dir / "model_final.pt"
    return final if final.exists() else previous  # type: ignore[return-value]


def run_propagation(network: nn.Module, labelled: list[dict], unlabelled: list[dict], output_dir: str | Path, *,
                    per_round: int = 5, samples_per_round: int = 240, val_items: list[dict] | None = None,
                    image_size: int = 352, batch_size: int = 6, lr: float = 1e-4, weight_decay: float = 1e-4,
                    seg_loss: str = "bce_dice", strong_window_jitter: bool = True, device: str = "cpu",
                    bf16: bool = False, tta: bool = False, seed: int = 0) -> Path:
    """Algorithm 1 of the paper: label ``per_round`` random pool slices, enlarge the set, fine-tune; repeat.

    ``network`` (the supervised model) labels the first round and is then the student that labels the next.
    ``labelled`` items hold arrays (``semiseg_items``), ``unlabelled`` items paths (``unlabelled_items``).
    Each round trains on ``samples_per_round`` slices drawn from the enlarged set (labelled + pseudo-labelled),
    at a constant ``lr``, and scores ``val_items`` after the round (:func:`train_rounds`). Writes
    ``pseudo_labels/``, ``round_NNN/`` and the final weights ``model_final.pt`` in ``output_dir``; returns the
    path of the final weights.
    """
    if per_round < 1 or samples_per_round < 1:
        raise ValueError(f"per_round and samples_per_round must be >= 1, got {per_round}, {samples_per_round}")
    schedule = RoundSchedule(per_round=per_round, samples_per_round=samples_per_round, lr=lr,
                             weight_decay=weight_decay, seg_loss=seg_loss, strong_window_jitter=strong_window_jitter,
                             batch_size=batch_size, image_size=image_size, tta=tta)
    final = train_rounds(network, labelled, unlabelled, output_dir, schedule, val_items=val_items, device=device,
                         bf16=bf16, seed=seed)
    return copy_atomic(final, Path(output_dir) / "model_final.pt")


def copy_atomic(source: Path, target: Path) -> Path:
    """Copy ``source`` to ``target`` through a temporary name (no half-written ``target`` is ever seen)."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return target
