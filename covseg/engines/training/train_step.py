"""One supervised training step: a batch at a random scale (or every scale), deep supervision, optional mean teacher.

Binary networks (``num_classes=1``: one sigmoid channel, 0/1 float masks) and C-class networks (``num_classes=C``:
softmax logits, class-index masks (B, 1, H, W)) share the step.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from ignite.engine import Engine
from torch import Tensor, nn

from covseg.engines.runtime.cpu import autocast_context
from covseg.networks.outputs import DeepSupervisionOutput, split_output

if TYPE_CHECKING:
    from covseg.engines.training.mean_teacher import MeanTeacher

__all__ = ["edge_from_mask", "make_train_step", "resize_masks", "scaled_size"]


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
