"""Paper-table evaluation of a 2D network on a folder of slices (the COVID-SemiSeg test split).

Writes each probability map as an 8-bit PNG named like its image, at its mask's size, so any external scorer can
check them, then scores the folder with the authors' toolbox conventions (:mod:`covseg.metrics.toolbox`).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from torch import nn

from covseg.engines.predictor import SlicePredictor
from covseg.io.atomic import atomic_write_text
from covseg.io.slices import list_images, read_grey, write_grey
from covseg.metrics.toolbox import IMAGE_KEYS, evaluate_folders, format_table_row

TABLE_KEYS = ("meanDic", "meanSen", "meanSpe", "Sm", "meanEm", "MAE")


def predict_folder(network: nn.Module, images_dir: str | Path, out_dir: str | Path, masks_dir: str | Path | None = None,
                   image_size: int = 352, device: str = "cpu", bf16: bool = False, batch_size: int = 8,
                   tta: bool = False) -> list[Path]:
    """Predict every image of ``images_dir``; write ``out_dir/<stem>.png`` (0-255) at the mask's (or image's) size.

    ``tta``: average the logits over flips (see :class:`SlicePredictor`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictor = SlicePredictor(network, image_size=image_size, device=device, batch_size=batch_size, bf16=bf16,
                                tta=tta)
    paths = list_images(Path(images_dir))
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


def evaluate_network(network: nn.Module, dataset_dir: str | Path, output_dir: str | Path, image_size: int = 352,
                     device: str = "cpu", bf16: bool = False, name: str = "covseg", tta: bool = False) -> dict:
    """Predict the test split, score it like the paper, write ``metrics.json`` and ``per_image.csv``; print the row."""
    dataset_dir, output_dir = Path(dataset_dir), Path(output_dir)
    images, masks = dataset_dir / "test" / "images", dataset_dir / "test" / "masks"
    predictions = output_dir / "predictions"
    predict_folder(network, images, predictions, masks, image_size=image_size, device=device, bf16=bf16, tta=tta)
    figures = evaluate_folders(predictions, masks)
    per_image = figures.pop("per_image", [])
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / "metrics.json", json.dumps(figures, indent=2))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(("name", *IMAGE_KEYS))
    for row in per_image:
        writer.writerow([row["name"], *(f"{row[k]:.4f}" for k in IMAGE_KEYS)])
    atomic_write_text(output_dir / "per_image.csv", buffer.getvalue())
    print(format_table_row(figures, name=name), flush=True)
    return figures
