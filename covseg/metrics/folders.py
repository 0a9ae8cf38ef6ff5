"""Score a folder of predicted maps against a folder of masks the way the Inf-Net authors' toolbox does: files paired
by stem, read as grey (colour masks through luma, colour maps by their first channel), a map of another size
resized to its mask's, then :class:`covseg.metrics.toolbox.ToolboxAccumulator`. Errors are
``ValueError("<path>: <reason>")``.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from covseg.metrics.toolbox import ToolboxAccumulator

__all__ = ["PRED_SUFFIXES", "evaluate_folders", "match_files", "natural_key", "read_gray"]


PRED_SUFFIXES = (".png", ".jpg", ".jpeg")


def natural_key(stem: str) -> list:
    """A sort key that orders ``img2`` before ``img10``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", stem)]


def read_gray(path: Path, *, is_mask: bool) -> np.ndarray:
    """A 2D image: masks in colour go through luma (``rgb2gray``), maps in colour keep their first channel."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            if im.mode in ("1", "L", "I;16", "F"):
                arr = np.asarray(im)
            elif im.mode == "I":
                arr = np.asarray(im)
                if arr.min() < 0 or arr.max() > 65535:
                    raise ValueError(f"32-bit image values out of 16-bit range ({arr.min()}..{arr.max()})")
                arr = arr.astype(np.uint16)
            elif is_mask:
                arr = np.asarray(im.convert("L"))
            else:
                arr = np.asarray(im.convert("RGB"))[..., 0]
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read image ({exc})") from exc
    if arr.dtype == np.dtype(">u2") or arr.dtype == np.dtype("<u2"):
        arr = arr.astype(np.uint16)
    return arr


def _resize_like(pred: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if pred.dtype == bool:
        pred = pred.astype(np.uint8) * 255
    elif pred.dtype not in (np.uint8, np.uint16, np.float32):
        pred = pred.astype(np.float32)
    return cv2.resize(pred, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def match_files(pred_dir: str | Path, gt_dir: str | Path) -> list[tuple[Path, Path]]:
    """(prediction, mask) pairs matched by file stem, in natural order of the masks (``*.png``; hidden files,
    named ``.*``, are left out on both sides).

    Raises ``ValueError("<path>: <reason>")`` for a missing folder, no masks, a mask without prediction or a
    stem with more than one prediction. Predictions without a mask are ignored.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for d in (pred_dir, gt_dir):
        if not d.is_dir():
            raise ValueError(f"{d}: not a folder")
    # hidden files are left out, as by covseg infer: macOS copies add a "._<name>.png" beside each image
    masks = sorted((p for p in gt_dir.iterdir()
                    if p.suffix.lower() == ".png" and not p.name.startswith(".") and p.is_file()),
                   key=lambda p: natural_key(p.stem))
    if not masks:
        raise ValueError(f"{gt_dir}: no .png masks")
    preds: dict[str, list[Path]] = {}
    for p in pred_dir.iterdir():
        if p.suffix.lower() in PRED_SUFFIXES and not p.name.startswith(".") and p.is_file():
            preds.setdefault(p.stem, []).append(p)
    pairs = []
    for mask in masks:
        found = preds.get(mask.stem, [])
        if not found:
            raise ValueError(f"{pred_dir / (mask.stem + '.png')}: missing prediction for mask {mask}")
        if len(found) > 1:
            raise ValueError(f"{found[0]}: several predictions for mask {mask}: "
                             f"{', '.join(sorted(p.name for p in found))}")
        pairs.append((found[0], mask))
    return pairs


def evaluate_folders(pred_dir: str | Path, gt_dir: str | Path) -> dict:
    """Score every mask ``gt_dir/<stem>.png`` against ``pred_dir/<stem>.(png|jpg|jpeg)`` the toolbox's way.

    A prediction whose size differs from its mask is resized to the mask size with bilinear interpolation
    (``cv2.INTER_LINEAR``; the MATLAB toolbox uses ``imresize``, i.e. bicubic, and overwrites the file;
    nothing is written here).

    Returns the set's figures (``meanDic``, ``meanSen``, ``meanSpe``, ``meanPre``, ``meanIoU``, ``meanEm``,
    ``max*``, ``adp*``, ``Sm``, ``MAE``, ``adpIoUPerImage``), ``n_images``, and ``per_image``: one dict per
    image (``name``, ``pred``, ``mask``, ``resized`` and :data:`IMAGE_KEYS`), for a per-image CSV.
    Errors are ``ValueError("<path>: <reason>")``.
    """
    acc = ToolboxAccumulator()
    for pred_path, mask_path in match_files(pred_dir, gt_dir):
        gt = read_gray(mask_path, is_mask=True)
        if gt.dtype in (np.uint8, np.uint16) and gt.max(initial=0) == 1:  # the mask's fault: name it
            raise ValueError(f"{mask_path}: mask holds only 0 and 1, but masks are read as 0-255 images with "
                             "infection > 128 (save it as 0 / 255)")
        pred = read_gray(pred_path, is_mask=False)
        resized = pred.shape != gt.shape
        if resized:
            pred = _resize_like(pred, gt.shape)
        try:
            acc.add(pred, gt, name=mask_path.stem)
        except ValueError as exc:
            raise ValueError(f"{pred_path}: {exc}") from exc
        acc.per_image[-1].update(pred=str(pred_path), mask=str(mask_path), resized=resized)
    out: dict = acc.figures()
    out["n_images"] = acc.n
    out["per_image"] = acc.per_image
    return out

