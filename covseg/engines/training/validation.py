"""Validation figures of a segmentation network on labelled slices (the training runs' selection figure)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from covseg.engines.runtime.cpu import autocast_context
from covseg.metrics.multiclass import ClassToolbox, class_scores, mean_foreground

__all__ = ["validate"]


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
