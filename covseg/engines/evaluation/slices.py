"""Paper-table evaluation of a 2D network on a folder of slices (the COVID-SemiSeg test split).

Writes each probability map as an 8-bit PNG named like its image, at its mask's size, so any external scorer can
check them, then scores the folder with the authors' toolbox conventions (:mod:`covseg.metrics.toolbox`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from torch import nn

from covseg.engines.inference.predictor import SlicePredictor
from covseg.io.atomic import atomic_write_text
from covseg.io.slices import list_images, read_grey, write_grey
from covseg.io.strict_json import json_text
from covseg.metrics.folders import evaluate_folders
from covseg.metrics.tables import format_table_row, per_image_csv_text

TABLE_KEYS = ("meanDic", "meanSen", "meanSpe", "Sm", "meanEm", "MAE")


def check_ground_truth(images: Sequence[Path], *mask_dirs: Path) -> None:
    """Before any prediction: ``ValueError("<path>: <reason>")`` when there is no image, an image has no
    ``<stem>.png`` in one of ``mask_dirs`` (the ground truth it is scored against), or a mask has no image (it
    would be scored against whatever prediction an earlier run left under that name)."""
    if not images:
        raise ValueError(f"{mask_dirs[0]}: no image to score against these masks (the images folder is empty; "
                         "check --dataset_dir)")
    stems = {Path(p).stem for p in images}
    for masks in mask_dirs:
        if not masks.is_dir():
            raise FileNotFoundError(f"{masks}: ground-truth folder not found")
        missing = [Path(p) for p in images if not (masks / f"{Path(p).stem}.png").is_file()]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ValueError(f"{masks / (missing[0].stem + '.png')}: ground-truth mask missing for "
                             f"{missing[0].name}{more}")
        extra = sorted(m for m in masks.glob("*.png") if not m.name.startswith(".") and m.stem not in stems)
        if extra:
            more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
            raise ValueError(f"{extra[0]}: mask without an image of the same name{more}")


def predict_paths(predictor: SlicePredictor, paths: Sequence[Path], out_dir: str | Path,
                  masks_dir: str | Path | None = None) -> list[Path]:
    """Predict the grey images ``paths``; write ``out_dir/<stem>.png`` (0-255) at the mask's (or image's) size."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    probs = predictor.predict([read_grey(p) for p in paths])
    written = []
    for path, prob in zip(paths, probs):
        prob_map = prob[0]
        if masks_dir is not None:
            mask_path = Path(masks_dir) / f"{path.stem}.png"
            with Image.open(mask_path) as mask:
                size = mask.size  # (W, H)
            if size != (prob_map.shape[1], prob_map.shape[0]):
                prob_map = np.asarray(Image.fromarray(prob_map).resize(size, Image.BILINEAR))
        written.append(write_grey(out_dir / f"{path.stem}.png", prob_map))
    return written


def predict_folder(network: nn.Module, images_dir: str | Path, out_dir: str | Path, masks_dir: str | Path | None = None,
                   image_size: int = 352, device: str = "cpu", bf16: bool = False, batch_size: int = 8,
                   tta: bool = False) -> list[Path]:
    """Predict every image of ``images_dir``; write ``out_dir/<stem>.png`` (0-255) at the mask's (or image's) size.

    ``tta``: average the logits over flips (see :class:`SlicePredictor`)."""
    predictor = SlicePredictor(network, image_size=image_size, device=device, batch_size=batch_size, bf16=bf16,
                                tta=tta)
    return predict_paths(predictor, list_images(Path(images_dir)), out_dir, masks_dir)


class SliceEvaluation:
    """The evaluation workflow's ``evaluator``: predict ``dataset`` (image paths) with ``inferer``, write the 8-bit
    maps to ``<output_dir>/predictions``, score them against ``masks_dir`` like the paper, write ``metrics.json``
    and ``per_image.csv``, print the table row; :meth:`run` returns the figures."""

    def __init__(self, dataset: Sequence[str | Path], inferer: SlicePredictor, masks_dir: str | Path,
                 output_dir: str | Path, name: str = "covseg") -> None:
        self.dataset = [Path(p) for p in dataset]
        self.inferer, self.masks_dir, self.output_dir, self.name = inferer, Path(masks_dir), Path(output_dir), name

    def run(self) -> dict:
        check_ground_truth(self.dataset, self.masks_dir)
        predictions = self.output_dir / "predictions"
        predict_paths(self.inferer, self.dataset, predictions, self.masks_dir)
        figures = evaluate_folders(predictions, self.masks_dir)
        per_image = figures.pop("per_image", [])
        atomic_write_text(self.output_dir / "metrics.json", json_text(figures))
        atomic_write_text(self.output_dir / "per_image.csv", per_image_csv_text(per_image, digits=4))
        print(format_table_row(figures, name=self.name), flush=True)
        return figures


def evaluate_network(network: nn.Module, dataset_dir: str | Path, output_dir: str | Path, image_size: int = 352,
                     device: str = "cpu", bf16: bool = False, name: str = "covseg", tta: bool = False) -> dict:
    """Predict the test split, score it like the paper, write ``metrics.json`` and ``per_image.csv``; print the row."""
    dataset_dir = Path(dataset_dir)
    predictor = SlicePredictor(network, image_size=image_size, device=device, bf16=bf16, tta=tta)
    images = list_images(dataset_dir / "test" / "images")
    return SliceEvaluation(images, predictor, dataset_dir / "test" / "masks", output_dir, name).run()
