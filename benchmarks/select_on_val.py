"""Score candidate weights on the validation split (5 of the 50 labelled slices) with the paper's metrics.

Usage: ``python benchmarks/select_on_val.py WEIGHTS [WEIGHTS ...] [--image-size 256] [--tta both]``.

Model and inference choices (which checkpoint, flip averaging or not) are made here, on slices carved from the
training data, never on the test split. Prints one table row per (weights, tta) pair and the best by meanDic.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from torch import nn

from covseg.engines.evaluation.slices import predict_folder
from covseg.io.slices import semiseg_items, split_train_val
from covseg.metrics.folders import evaluate_folders
from covseg.metrics.tables import format_table_row
from covseg.networks.loading import load_weights
from covseg.networks.registry import get_network

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "covid-semiseg"


def val_folders(dataset_dir: Path, work: Path, val_count: int = 5, seed: int = 0) -> tuple[Path, Path]:
    """Symlink the validation images and masks into ``work/{images,masks}`` (the trainer's split)."""
    _, val = split_train_val(semiseg_items(dataset_dir, "train"), val_count, seed)
    base = dataset_dir / "train" / "labeled"
    images, masks = work / "images", work / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    for item in val:
        image = next(p for p in (base / "images").iterdir() if p.stem == item["name"])
        (images / image.name).symlink_to(image)
        (masks / f"{item['name']}.png").symlink_to(base / "masks" / f"{item['name']}.png")
    return images, masks


def score_on_val(network: nn.Module, dataset_dir: Path, work: Path, image_size: int = 352, tta: bool = False) -> dict:
    """Paper figures of ``network`` on the validation slices (linked once into ``work/val``, predicted into
    ``work/pred``)."""
    images, masks = work / "val" / "images", work / "val" / "masks"
    if not images.exists():
        val_folders(dataset_dir, work / "val")
    predict_folder(network, images, work / "pred", masks, image_size=image_size, tta=tta)
    return evaluate_folders(work / "pred", masks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="+")
    parser.add_argument("--network", default="infnet")
    parser.add_argument("--image-size", type=int, default=352)
    parser.add_argument("--tta", choices=("off", "on", "both"), default="both")
    parser.add_argument("--dataset-dir", default=str(DATA))
    args = parser.parse_args()
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.tta]
    best = None
    with tempfile.TemporaryDirectory() as tmp:
        for weights in args.weights:
            network = load_weights(get_network(args.network), weights)
            for tta in modes:
                figures = score_on_val(network, Path(args.dataset_dir), Path(tmp), args.image_size, tta)
                label = f"{weights} tta={'on' if tta else 'off'}"
                print(format_table_row(figures, name=label), flush=True)
                if best is None or figures["meanDic"] > best[0]:
                    best = (figures["meanDic"], label)
    print(f"best on validation: {best[1]} (meanDic {best[0]:.4f})")


if __name__ == "__main__":
    main()
