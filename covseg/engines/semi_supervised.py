"""Semi-Inf-Net's randomly selected propagation (Fan et al. 2020, Algorithm 1) on pytorch-ignite.

Round after round, the current model labels ``per_round`` slices drawn at random from the unlabelled pool, they
join the training set, and the model is fine-tuned on the enlarged set, until the pool is empty. The paper uses
``per_round = 5`` (320 rounds, ~50 GPU-hours); on a CPU a larger ``per_round`` and a fixed number of training
samples per round keep the same procedure affordable. Each round fine-tunes with :func:`build_trainer` in its own
folder, so a killed run resumes at the round it was in; pseudo labels are 0/255 PNGs named like their slice, written
atomically, and are never re-predicted once written.
"""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from monai.data import Dataset
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from covseg.engines.predictor import SlicePredictor
from covseg.engines.training import build_trainer
from covseg.io.atomic import atomic_path
from covseg.io.slices import pseudo_labelled_items, read_grey, write_grey
from covseg.networks.loading import load_weights
from covseg.transforms.augment import eval_transforms, train_transforms

log = logging.getLogger(__name__)

__all__ = ["run_propagation", "write_pseudo_labels"]


def write_pseudo_labels(predictor: SlicePredictor, items: list[dict], out_dir: str | Path,
                        threshold: float = 0.5) -> list[dict]:
    """Label ``items`` (``{"name", "image": path}``) with ``predictor``; write ``out_dir/<name>.png`` (0/255).

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
                chunk.append((item, read_grey(Path(item["image"]))))
            except (OSError, ValueError) as exc:
                log.warning("%s: skipped, not a readable slice (%s)", item["image"], exc)
        for (item, _), prob in zip(chunk, predictor.predict([grey for _, grey in chunk])):
            target = write_grey(out_dir / f"{item['name']}.png", (prob[0] >= threshold).astype(np.float32))
            done.append({**item, "label": str(target)})
    return done


def run_propagation(network: nn.Module, labelled: list[dict], unlabelled: list[dict], output_dir: str | Path, *,
                    per_round: int = 5, samples_per_round: int = 240, val_items: list[dict] | None = None,
                    image_size: int = 352, batch_size: int = 6, lr: float = 1e-4, weight_decay: float = 1e-4,
                    seg_loss: str = "bce_dice", strong_window_jitter: bool = True, device: str = "cpu",
                    bf16: bool = False, tta: bool = False, seed: int = 0) -> Path:
    """Algorithm 1 of the paper: label ``per_round`` random pool slices, enlarge the set, fine-tune; repeat.

    ``labelled`` items hold arrays (``semiseg_items``), ``unlabelled`` items paths (``unlabelled_items``).
    Each round trains on ``samples_per_round`` slices drawn from the enlarged set (labelled + pseudo-labelled),
    at a constant ``lr``, and scores ``val_items`` after the round. Writes ``pseudo_labels/``, ``round_NNN/`` and
    the final weights ``model_final.pt`` in ``output_dir``; returns the path of the final weights.
    """
    if per_round < 1 or samples_per_round < 1:
        raise ValueError(f"per_round and samples_per_round must be >= 1, got {per_round}, {samples_per_round}")
    output_dir = Path(output_dir)
    label_dir = output_dir / "pseudo_labels"
    pool = list(unlabelled)
    random.Random(seed).shuffle(pool)
    rounds = [pool[i:i + per_round] for i in range(0, len(pool), per_round)]
    val_loader = None
    if val_items:
        val_loader = DataLoader(Dataset(val_items, eval_transforms(image_size)), batch_size=1)
    enlarged: list[dict] = []
    final: Path | None = None
    for number, chosen in enumerate(rounds, start=1):
        round_dir = output_dir / f"round_{number:03d}"
        if (round_dir / "model_final.pt").exists():  # finished before a restart: its labels are on disk
            enlarged += pseudo_labelled_items(chosen, label_dir)
            final = round_dir / "model_final.pt"
            continue
        if final is not None:  # the previous round's weights (needed when that round ran before a restart)
            load_weights(network, final)
        predictor = SlicePredictor(network, image_size=image_size, device=device, batch_size=8, bf16=bf16,
                                   channels_last=False, tta=tta)
        enlarged += write_pseudo_labels(predictor, chosen, label_dir)
        train_set = labelled + enlarged
        sampler = RandomSampler(train_set, num_samples=samples_per_round,
                                generator=torch.Generator().manual_seed(seed + number))
        loader = DataLoader(Dataset(train_set, train_transforms(image_size, strong_window_jitter)),
                            batch_size=batch_size, sampler=sampler, num_workers=0)
        trainer = build_trainer(network, loader, round_dir, val_loader=val_loader, max_epochs=1, lr=lr,
                                weight_decay=weight_decay, lr_schedule="constant", image_size=image_size,
                                device=device, bf16=bf16, val_interval=1, seed=seed + number, seg_loss=seg_loss,
                                tensorboard=False)
        log.info("round %d/%d: %d labelled + %d pseudo-labelled slices", number, len(rounds), len(labelled),
                 len(enlarged))
        print(f"round {number}/{len(rounds)}: training set {len(train_set)} slices", flush=True)
        trainer.run(loader, max_epochs=1)
        final = round_dir / "model_final.pt"
        for checkpoint in round_dir.glob("checkpoint_*.pt"):  # the round is done: only its weights are needed
            checkpoint.unlink()
    if final is None:
        raise ValueError(f"{output_dir}: no round was run (is the unlabelled pool empty?)")
    out = output_dir / "model_final.pt"
    with atomic_path(out) as tmp:
        shutil.copyfile(final, tmp)
    return out
