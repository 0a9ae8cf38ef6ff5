"""Training and scoring of the JCS slice classifier on pytorch-ignite.

- :func:`build_classifier_trainer`: cross-entropy with image mixing (mixup, Wu et al. Eq. 3, λ ~ Beta(α, α) once
  per batch), AdamW with warm-up and cosine decay, bf16 autocast where native, validation AUC every epoch with
  model selection on the chosen sources' validation slices, checkpoints that resume after a kill.
- :func:`predict_scores`: P(COVID-19) for every item of a loader.
- :func:`evaluate_classifier`: a per-slice CSV (``file, score, label``) and ``metrics.json`` for a folder of
  slices listed in a ``labels.csv``.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar
from torch import Tensor, nn
from torch.utils.data import DataLoader

from covseg.engines.runtime.cpu import autocast_context
from covseg.engines.training.checkpoints import (
    ResumableEngine,
    attach_checkpoints,
    attach_snapshot_averaging,
    save_weights,
)
from covseg.engines.training.seeding import follow_epochs
from covseg.engines.training.trainer import check_training_options
from covseg.io.atomic import atomic_write_text
from covseg.io.strict_json import json_text
from covseg.metrics.classification import auc_interval, classification_scores, roc_auc
from covseg.networks.classifier import covid_probability, trainable_parameters
from covseg.networks.loading import read_state
from covseg.networks.outputs import final_logits
from covseg.options import as_flag

log = logging.getLogger(__name__)


def mixup(images: Tensor, labels: Tensor, alpha: float, num_classes: int = 2) -> tuple[Tensor, Tensor]:
    """Image mixing (Eq. 3): ``λ x_i + (1 - λ) x_j`` with a shuffled partner j and the same mix of one-hot labels.

    ``alpha <= 0`` returns the batch unmixed (one-hot targets).
    """
    targets = F.one_hot(labels.long(), num_classes).float()
    if alpha <= 0 or images.shape[0] < 2:
        return images, targets
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(images.shape[0], device=images.device)
    return lam * images + (1 - lam) * images[perm], lam * targets + (1 - lam) * targets[perm]


def make_classifier_step(network: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, *,
                         mixup_alpha: float = 0.5, bf16: bool = False, grad_clip: float = 5.0,
                         inferer: Callable | None = None):
    """An ignite process function: one mixed batch, soft-target cross-entropy, one optimiser step.
    ``inferer(images, network)`` (the bundle's ``train#inferer``) runs the forward pass when given."""

    def step(engine: Engine, batch: dict) -> dict:
        network.train()
        images, targets = mixup(batch["image"].to(device), batch["label"].to(device), mixup_alpha)
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(device, bf16):
            logits = final_logits(network(images) if inferer is None else inferer(images, network))
        loss = torch.sum(-targets * F.log_softmax(logits.float(), dim=1), dim=1).mean()
        loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(trainable_parameters(network), grad_clip)
        optimizer.step()
        return {"loss": float(loss.detach())}

    return step


@torch.inference_mode()
def predict_scores(network: nn.Module, loader: DataLoader, device: str | torch.device = "cpu",
                   bf16: bool = False, inferer: Callable | None = None) -> list[dict]:
    """One row ``{"name", "score", "label", "source", "group", "split"}`` per item; score = P(COVID-19).
    ``inferer(images, network)`` runs the forward pass when given."""
    device = torch.device(device)
    was_training = network.training
    network.eval()
    rows: list[dict] = []
    for batch in loader:
        with autocast_context(device, bf16):
            images = batch["image"].to(device)
            out = network(images) if inferer is None else inferer(images, network)
        scores = covid_probability(out).cpu().tolist()
        n = len(scores)
        for i in range(n):
            rows.append({"name": _at(batch, "name", i, ""), "score": scores[i],
                         "label": int(_at(batch, "label", i, -1)), "source": _at(batch, "source", i, ""),
                         "group": _at(batch, "group", i, ""), "split": _at(batch, "split", i, "")})
    network.train(was_training)
    return rows


def _at(batch: dict, key: str, i: int, default):
    value = batch.get(key)
    if value is None:
        return default
    item = value[i]
    return item.item() if isinstance(item, Tensor) else item


def validation_aucs(rows: Sequence[dict]) -> dict[str, float]:
    """AUC over all rows (``auc``) and per source (``auc/<source>``)."""
    out = {"auc": roc_auc([r["score"] for r in rows], [r["label"] for r in rows])}
    for source in sorted({r["source"] for r in rows if r["source"]}):
        part = [r for r in rows if r["source"] == source]
        out[f"auc/{source}"] = roc_auc([r["score"] for r in part], [r["label"] for r in part])
    return out


def selection_score(aucs: dict[str, float], select_sources: Sequence[str] | None) -> float:
    """Mean validation AUC over ``select_sources`` (all validation slices when None or empty)."""
    if not select_sources:
        return aucs["auc"]
    values = [aucs.get(f"auc/{s}", math.nan) for s in select_sources]
    return float(np.mean(values))


def build_classifier_trainer(network: nn.Module, train_loader: DataLoader, output_dir: str | Path, *,
                             val_loader: DataLoader | None = None, max_epochs: int = 20, lr: float = 3e-4,
                             weight_decay: float = 0.05, warmup_steps: int = 100, mixup_alpha: float = 0.5,
                             select_sources: Sequence[str] | None = ("sars-cov-2-ct",),
                             device: str | torch.device = "cpu", bf16: bool = False, resume: bool = True,
                             progress: bool = True, seed: int = 0, snapshot_start: int | None = None,
                             inferer: Callable | None = None) -> Engine:
    """The ignite trainer of :mod:`covseg.engines.training.classifier` (see there).

    ``output_dir`` receives ``checkpoint_<epoch>.pt`` (resume state; the newest is loaded when ``resume``),
    ``model_best.pt`` (weights with the best validation selection score), ``best.json``, ``history.jsonl``
    (one line of figures per epoch) and ``model_final.pt``. With ``snapshot_start``, every epoch's weights from
    that epoch on are averaged into ``model_swa.pt`` at the end; the average is validated like an epoch (history
    line ``"epoch": "swa"``) and becomes ``model_best.pt`` when it scores higher. ``inferer(images, network)`` (the
    bundle's ``train#inferer``, MONAI's ``SimpleInferer``) runs the training forward pass when given.
    """
    check_training_options(max_epochs, lr)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    device = torch.device(device)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    network.to(device)
    optimizer = torch.optim.AdamW(trainable_parameters(network), lr=lr, weight_decay=weight_decay)
    total = max(1, max_epochs * len(train_loader))

    def factor(it: int) -> float:
        if it < warmup_steps:
            return (it + 1) / warmup_steps
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(it, total) / total))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    trainer = ResumableEngine(make_classifier_step(network, optimizer, device, mixup_alpha=float(mixup_alpha),
                                          bf16=as_flag(bf16, "bf16"), inferer=inferer))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: scheduler.step())
    follow_epochs(trainer, train_loader)  # a sampler that draws by epoch (source balancing) resumes in step
    to_save = {"network": network, "optimizer": optimizer, "scheduler": scheduler, "trainer": trainer}
    attach_checkpoints(trainer, to_save, output_dir, device, resume)
    best_file = output_dir / "best.json"
    best = {"score": json.loads(best_file.read_text())["score"] if best_file.exists() else -math.inf}
    if progress:
        ProgressBar(persist=False).attach(trainer, output_transform=lambda out: {"loss": out["loss"]})
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"]))

    def _validate_and_log(net: nn.Module, record: dict) -> None:
        if val_loader is not None:
            aucs = validation_aucs(predict_scores(net, val_loader, device, as_flag(bf16, "bf16")))
            record.update(aucs)
            record["score"] = selection_score(aucs, select_sources)
            if record["score"] > best["score"]:
                best["score"] = record["score"]
                save_weights(net, output_dir / "model_best.pt")
                atomic_write_text(best_file, json.dumps({"score": record["score"], "epoch": record["epoch"], **aucs}))
                record["best"] = True
        with open(output_dir / "history.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
        msg = " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items())
        log.info(msg)
        print(msg, flush=True)

    @trainer.on(Events.EPOCH_COMPLETED)
    def _epoch_done(engine: Engine) -> None:
        record: dict = {"epoch": engine.state.epoch, "loss": float(np.mean(losses)) if losses else math.nan,
                        "lr": optimizer.param_groups[0]["lr"]}
        losses.clear()
        _validate_and_log(network, record)

    attach_snapshot_averaging(trainer, network, output_dir, snapshot_start)

    @trainer.on(Events.COMPLETED)
    def _finish(engine: Engine) -> None:
        save_weights(network, output_dir / "model_final.pt")
        swa = output_dir / "model_swa.pt"
        if snapshot_start is not None and swa.exists():
            averaged = copy.deepcopy(network)
            averaged.load_state_dict(read_state(swa))
            _validate_and_log(averaged, {"epoch": "swa", "snapshots": len(list(output_dir.glob("snapshot_*.pt")))})
        if val_loader is None:  # nothing to select on: the final weights are the best ones
            save_weights(network, output_dir / "model_best.pt")

    return trainer


def scores_csv_text(rows: Sequence[dict]) -> str:
    """The per-slice CSV: ``file, score, label`` (label 1 = COVID-19, 0 = non-COVID, -1 = unknown)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "score", "label"])
    for r in rows:
        writer.writerow([r["name"], f"{r['score']:.6f}", r["label"]])
    return buffer.getvalue()


class ClassifierEvaluation:
    """The classifier bundle's ``evaluator``: score ``dataset`` (items of
    :func:`covseg.io.classification.labelled_slices` under :func:`classifier_eval_transforms`) with ``network``
    through ``inferer`` (``inferer(images, network)``; ``None``: the network alone), write ``scores.csv`` and
    ``metrics.json`` (all slices, and per ``source/split``) into ``output_dir``; :meth:`run` returns the metrics."""

    def __init__(self, dataset, network: nn.Module, output_dir: str | Path, *, inferer: Callable | None = None,
                 device: str | torch.device = "cpu", bf16: bool = False, threshold: float = 0.5,
                 batch_size: int = 16) -> None:
        self.dataset, self.network, self.output_dir, self.inferer = dataset, network, Path(output_dir), inferer
        self.device, self.bf16, self.threshold, self.batch_size = device, bf16, threshold, batch_size

    def run(self) -> dict:
        if len(self.dataset) == 0:
            raise ValueError("no slices to evaluate (check --dataset_dir, sources and splits)")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        loader = DataLoader(self.dataset, batch_size=self.batch_size)
        rows = predict_scores(self.network, loader, self.device, as_flag(self.bf16, "bf16"), self.inferer)
        metrics: dict = {"all": _set_scores(rows, self.threshold)}
        for key in sorted({_set_name(r) for r in rows} - {""}):
            metrics[key] = _set_scores([r for r in rows if _set_name(r) == key], self.threshold)
        metrics["threshold"] = self.threshold
        atomic_write_text(self.output_dir / "scores.csv", scores_csv_text(rows))
        atomic_write_text(self.output_dir / "metrics.json", json_text(metrics))
        return metrics


def evaluate_classifier(network: nn.Module, items: Sequence[dict], output_dir: str | Path, *,
                        image_size: int = 224, device: str | torch.device = "cpu", bf16: bool = False,
                        threshold: float = 0.5, batch_size: int = 16, lung_crop: bool = False) -> dict:
    """Score ``items`` (from :func:`covseg.io.classification.labelled_slices`) with :class:`ClassifierEvaluation`;
    return the metrics. ``lung_crop``: crop each slice to the lung box found on it first (weights trained with
    ``lung_crop``)."""
    from monai.data import Dataset

    from covseg.transforms.classification import classifier_eval_transforms

    dataset = Dataset(list(items), classifier_eval_transforms(image_size, lung_crop))
    return ClassifierEvaluation(dataset, network, output_dir, device=device, bf16=bf16, threshold=threshold,
                                batch_size=batch_size).run()


def _set_scores(rows: Sequence[dict], threshold: float) -> dict:
    """:func:`classification_scores` of ``rows`` plus ``auc_ci95``, the AUC's 95 % bootstrap interval resampling
    the rows' groups (patients; a row without a group is its own)."""
    scores, labels = [r["score"] for r in rows], [r["label"] for r in rows]
    out = classification_scores(scores, labels, threshold)
    groups = [r.get("group") or f"slice {i}" for i, r in enumerate(rows)]
    out["auc_ci95"] = list(auc_interval(scores, labels, groups))
    return out


def _set_name(row: dict) -> str:
    """``source/split`` of a row (or whichever of the two it has)."""
    return "/".join(x for x in (row.get("source", ""), row.get("split", "")) if x)

