"""Baselines and Inf-Net ablation rows trained on one shared budget and scored the same way.

Usage: ``python benchmarks/architecture_table.py --workdir /work/runs/table [--rows unet infnet ...]
[--epochs 25] [--image-size 256] [--jobs 2]``.

Each row is a network of :mod:`covseg.networks.registry` trained from scratch with the bundle's training recipe
(``bundles/infnet/configs/train.yaml``, same augmentation, loss, optimiser and schedule; only the network and the
overrides below change). Runs are resumable: a finished row (``model_final.pt``) is not retrained. ``--jobs``
trainings run side by side with ``cpu_count / jobs`` threads each. The final-epoch weights of every row are then scored,
without flip averaging, on the validation split (5 of the 50 labelled slices) and on the 48 test slices; the
table is printed and written to ``WORKDIR/table.md``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from select_on_val import score_on_val

from covseg.engines.evaluation.slices import TABLE_KEYS, evaluate_network
from covseg.losses.registry import SEGMENTATION_LOSSES
from covseg.networks.loading import load_weights
from covseg.networks.registry import get_network

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "covid-semiseg"
ROWS = {  # row name -> (registry name, label in the table)
    "unet": ("unet", "U-Net (MONAI BasicUNet)"),
    "unetpp": ("unetpp", "U-Net++ (MONAI BasicUNetPlusPlus)"),
    "attention_unet": ("attention_unet", "Attention U-Net (MONAI)"),
    "infnet_backbone": ("infnet_backbone", "Inf-Net No.1 backbone"),
    "infnet_ea": ("infnet_ea", "Inf-Net No.2 +EA"),
    "infnet_ppd": ("infnet_ppd", "Inf-Net No.3 +PPD"),
    "infnet_ra": ("infnet_ra", "Inf-Net No.4 +RA"),
    "infnet_ra_ea": ("infnet_ra_ea", "Inf-Net No.5 +RA+EA"),
    "infnet_ppd_ra": ("infnet_ppd_ra", "Inf-Net No.6 +PPD+RA"),
    "infnet": ("infnet", "Inf-Net No.7 +PPD+RA+EA (full)"),
}


def train_row(row: str, args: argparse.Namespace, threads: int) -> Path:
    """Train one row through the bundle (resuming if interrupted); return its final weights."""
    out = Path(args.workdir) / row
    final = out / "model_final.pt"
    if final.exists():
        return final
    command = [
        sys.executable, "-m", "monai.bundle", "run", "training",
        "--config_file", str(REPO / "bundles/infnet/configs/train.yaml"),
        "--meta_file", str(REPO / "bundles/infnet/configs/metadata.json"),
        "--dataset_dir", str(args.dataset_dir), "--output_dir", str(out),
        "--max_epochs", str(args.epochs), "--image_size", str(args.image_size), "--seg_loss", args.seg_loss,
        "--network_def#_target_", "covseg.networks.registry.get_network", "--network_def#name", ROWS[row][0],
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train.log", "a") as log:
        result = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0 or not final.exists():
        raise RuntimeError(f"{row}: training failed (exit {result.returncode}), see {out / 'train.log'}")
    return final


def score_row(row: str, weights: Path, args: argparse.Namespace) -> tuple[dict, dict]:
    """Paper figures of ``weights`` on the validation split and on the test split (no flip averaging)."""
    network = load_weights(get_network(ROWS[row][0]), weights)
    with tempfile.TemporaryDirectory() as tmp:
        val = score_on_val(network, Path(args.dataset_dir), Path(tmp), args.image_size)
    test = evaluate_network(network, args.dataset_dir, Path(args.workdir) / row / "test", args.image_size,
                            name=ROWS[row][1])
    return val, test


def markdown(rows: list[tuple[str, dict, dict]]) -> str:
    """The table: validation meanDic, then the six paper columns on the test split."""
    lines = ["| Model | val Dice | Dice | Sen. | Spec. | S-alpha | E-phi | MAE |", "|---" * 8 + "|"]
    for label, val, test in rows:
        lines.append(f"| {label} | {val['meanDic']:.3f} | " + " | ".join(f"{test[k]:.3f}" for k in TABLE_KEYS) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=list(ROWS))
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--seg-loss", default="structure", choices=SEGMENTATION_LOSSES)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--dataset-dir", default=str(DATA))
    args = parser.parse_args()
    if not (Path(args.dataset_dir) / "train").is_dir():
        sys.exit(f"{args.dataset_dir}: COVID-SemiSeg not found (expected train/ and test/ under it)")
    threads = max(1, (os.cpu_count() or 2) // args.jobs)
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {row: pool.submit(train_row, row, args, threads) for row in args.rows}
    results = []
    for row, future in futures.items():
        try:
            results.append((ROWS[row][1], *score_row(row, future.result(), args)))
        except RuntimeError as error:  # one failed row does not stop the table
            print(error, file=sys.stderr)
    table = markdown(results)
    Path(args.workdir, "table.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
