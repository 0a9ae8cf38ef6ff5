"""Paper-table evaluation of a multi-class model (slice -> background / GGO / consolidation) on the test split.

Writes each foreground class's softmax probability as an 8-bit PNG named like its image, at its mask's size
(``predictions-ggo/``, ``predictions-consolidation/``), scores each folder with the toolbox conventions against
``masks-ggo/`` and ``masks-consolidation/``, adds the argmax-label Dice per class, and prints the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch.nn.functional as F

from covseg.engines.evaluation.slices import check_ground_truth
from covseg.engines.inference.predictor import SlicePredictor
from covseg.io.atomic import atomic_write_text
from covseg.io.slices import read_class_mask, read_grey, write_grey
from covseg.io.strict_json import json_text
from covseg.metrics.folders import evaluate_folders
from covseg.metrics.multiclass import DEFAULT_CLASSES, class_scores

CLASS_FOLDERS = {"ggo": "masks-ggo", "consolidation": "masks-consolidation"}


def _resize(probs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    import torch

    if probs.shape[-2:] == shape:
        return probs
    t = F.interpolate(torch.from_numpy(probs)[None], size=shape, mode="bilinear", align_corners=False)
    return t[0].numpy()


def predict_class_paths(predictor: SlicePredictor, paths: Sequence[Path], out_dir: str | Path,
                        masks_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """Class probabilities (C, H, W) per image of ``paths`` by ``predictor``, at its mask's size when
    ``masks_dir`` is given; each foreground class map is written to ``out_dir/predictions-<class>/<stem>.png``."""
    out_dir = Path(out_dir)
    result = {}
    for path, probs in zip(paths, predictor.predict([read_grey(p) for p in paths])):
        if masks_dir is not None:
            probs = _resize(probs, read_class_mask(Path(masks_dir) / f"{path.stem}.png").shape)
        for k, name in enumerate(DEFAULT_CLASSES[1:], start=1):
            write_grey(out_dir / f"predictions-{name}" / f"{path.stem}.png", probs[k])
        result[path.stem] = probs
    return result


class MulticlassEvaluation:
    """The multi-class bundle's ``evaluator``: predict ``dataset`` (image paths) with ``inferer``, write the class
    maps, score GGO and consolidation against ``masks_root``'s ``masks-ggo/``, ``masks-consolidation/`` and
    ``masks-multiclass/`` like the paper, write ``metrics.json`` and print the table; :meth:`run` returns it."""

    def __init__(self, dataset: Sequence[str | Path], inferer: SlicePredictor, masks_root: str | Path,
                 output_dir: str | Path, name: str = "covseg") -> None:
        self.dataset = [Path(p) for p in dataset]
        self.inferer, self.masks_root, self.output_dir, self.name = inferer, Path(masks_root), Path(output_dir), name

    def run(self) -> dict:
        labels = self.masks_root / "masks-multiclass"
        check_ground_truth(self.dataset, labels, *(self.masks_root / f for f in CLASS_FOLDERS.values()))
        probs = predict_class_paths(self.inferer, self.dataset, self.output_dir, labels)
        figures: dict[str, dict] = {}
        label_dice: dict[str, list[float]] = {c: [] for c in CLASS_FOLDERS}
        for stem, p in probs.items():
            for cls, sc in class_scores(p.argmax(0), read_class_mask(labels / f"{stem}.png")).items():
                label_dice[cls].append(sc["dice"])
        for cls, folder in CLASS_FOLDERS.items():
            fig = evaluate_folders(self.output_dir / f"predictions-{cls}", self.masks_root / folder)
            fig.pop("per_image", None)
            fig["labelDice"] = float(np.mean(label_dice[cls]))
            figures[cls] = fig
        atomic_write_text(self.output_dir / "metrics.json", json_text(figures))
        print(format_class_table(figures, self.name), flush=True)
        return figures


def format_class_table(figures: dict[str, dict], name: str) -> str:
    """A markdown table: one row per class with the paper's columns and the argmax-label Dice."""
    keys = ("meanDic", "meanSen", "meanSpe", "Sm", "meanEm", "MAE", "labelDice")
    lines = [f"| {name} | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for cls, fig in figures.items():
        lines.append(f"| {cls} | " + " | ".join(f"{fig[k]:.3f}" for k in keys) + " |")
    return "\n".join(lines)
