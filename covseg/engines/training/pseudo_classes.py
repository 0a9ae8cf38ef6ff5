"""Pseudo class labels for unlabelled slices, so a multi-class head can also train on them (self-training).

A teacher head labels each unlabelled slice from the slice and its binary infection map, as inference does
(flip-averaged, a slice's small consolidation folded into GGO); the slices, their maps and the labels are saved in
one .npz (:func:`save_pseudo_set`), which the multi-class ``train.yaml`` reads with :func:`pseudo_items`
(``--pseudo_labels FILE``). The maps are the binary model's maps of the unperturbed slices, the student's prior
channel for these slices.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from covseg.engines.runtime.cpu import autocast_context, resolve_bf16
from covseg.io.atomic import atomic_path
from covseg.networks.flips import FLIPS, flip_averaged
from covseg.networks.outputs import final_logits
from covseg.transforms.class_merge import merge_small_class

KEYS = ("names", "images", "priors", "labels")


def label_slices(head: nn.Module, images: Sequence[np.ndarray], priors: Sequence[np.ndarray], image_size: int = 256,
                 merge_below: float = 0.006, flip_average: bool = True, bf16: bool | str = "auto") -> list[np.ndarray]:
    """Per slice (H, W) in [0, 1] and its infection map (H, W) or (1, H, W): the head's class label map (1, H, W)
    uint8, computed at ``image_size``² and resized to the slice (``merge_below``, ``flip_average`` as the bundle's
    inference applies them)."""
    use_bf16 = resolve_bf16(bf16, "cpu")
    head = head.eval()

    def once(xi: torch.Tensor) -> torch.Tensor:
        with autocast_context(torch.device("cpu"), use_bf16):
            return final_logits(head(xi)).float()

    labels = []
    with torch.inference_mode():
        for image, prior in zip(images, priors):
            image, prior = np.asarray(image, np.float32).squeeze(), np.asarray(prior, np.float32).squeeze()
            if image.ndim != 2 or prior.shape != image.shape:
                raise ValueError(f"slice {image.shape} and map {prior.shape} must be 2D and of one size")
            x = F.interpolate(torch.from_numpy(np.stack([image, prior]))[None], size=(image_size, image_size),
                              mode="bilinear", align_corners=False)
            logits = merge_small_class(flip_averaged(once, x, FLIPS if flip_average else (None,)), 2, 1, merge_below)
            logits = F.interpolate(logits, size=image.shape, mode="bilinear", align_corners=False)
            labels.append(logits[0].argmax(0).numpy().astype(np.uint8)[None])
    return labels


def _objects(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """A 1-D object array holding ``arrays`` as they are (their shapes differ from slice to slice)."""
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


def save_pseudo_set(path: str | Path, names: Sequence[str], images: Sequence[np.ndarray],
                    priors: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> Path:
    """Write the slices (float16), their infection maps (float16) and class labels (uint8), each (1, H, W), to one
    .npz, atomically."""
    if not len(names) == len(images) == len(priors) == len(labels):
        raise ValueError("names, images, priors and labels must have one entry per slice")
    as_chw = [[np.asarray(a, dtype)[None] if np.ndim(a) == 2 else np.asarray(a, dtype) for a in arrays]
              for arrays, dtype in ((images, np.float16), (priors, np.float16), (labels, np.uint8))]
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, names=np.asarray(list(names), dtype=str), images=_objects(as_chw[0]),
                 priors=_objects(as_chw[1]), labels=_objects(as_chw[2]))
    return path


def pseudo_items(path: str | Path) -> list[dict]:
    """Training items ``{"name", "image", "prior", "label"}`` (channel-first) of a :func:`save_pseudo_set` file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=True) as z:
            missing = [k for k in KEYS if k not in z.files]
            if missing:
                raise ValueError(f"{path}: not a pseudo-label set (missing {', '.join(missing)})")
            arrays = {k: z[k] for k in KEYS}
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: cannot be read as a pseudo-label set ({exc})") from exc
    items = []
    for name, image, prior, label in zip(*(arrays[k] for k in KEYS)):
        if not image.shape == prior.shape == label.shape:
            raise ValueError(f"{path}: slice {name}: image {image.shape}, map {prior.shape} and label {label.shape} "
                             f"differ in shape")
        items.append({"name": str(name), "image": image.astype(np.float32), "prior": prior, "label": label})
    return items
