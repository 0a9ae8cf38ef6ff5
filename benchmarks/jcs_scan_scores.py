"""How a JCS classifier scores the lung slices of the real non-COVID CT volumes (no COVID-19 in any of them).

For each volume of ``../shared/data/ct-volumes``: the share of lung slices scoring P(COVID-19) >= 0.5 and the mean
score, on the windowed lung-box crops that ``covseg diagnose`` classifies and, beside them, on the whole windowed
axial slices. Any weights can be scored (candidates before they ship); prints a markdown table.

Run:  python benchmarks/jcs_scan_scores.py [--weights FILE] [--image-size N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from covseg.engines.inference.diagnose import lung_crops
from covseg.engines.inference.slice_scorer import SliceScorer
from covseg.io.read import read_volume
from covseg.networks.loading import load_bundle, load_weights
from covseg.transforms.intensity import window_hu
from covseg.transforms.lung import lung_mask

REPO = Path(__file__).resolve().parents[1]
VOLUMES = REPO.parent / "shared" / "data" / "ct-volumes"
SCANS = ("chest-cip64/ct.nii.gz", "chest-2slice/ct.nii.gz", "abdomen-totalseg/example_ct.nii.gz")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", help="classifier weights (default: the shipped bundle's)")
    ap.add_argument("--image-size", type=int, help="classifier input side (default: the bundle's)")
    args = ap.parse_args()
    classifier = load_bundle(REPO / "bundles" / "jcs_classifier")
    network = load_weights(classifier.network, args.weights) if args.weights else classifier.network
    scorer = SliceScorer(network, args.image_size or classifier.image_size, bf16="auto")
    print(f"weights {args.weights or 'shipped'}, input {scorer.image_size}², {torch.get_num_threads()} threads")
    print("| volume | lung slices | crops: share >= 0.5 | crops: mean | whole slices: share >= 0.5 | whole: mean |")
    print("|---|---|---|---|---|---|")
    for name in SCANS:
        path = VOLUMES / name
        if not path.exists():
            print(f"| {name} | missing: {path} | | | | |")
            continue
        volume = read_volume(path)
        lung = lung_mask(volume.array, volume.spacing)
        zs, crops = lung_crops(volume, lung)
        on_crops = scorer(crops)
        on_whole = scorer([window_hu(volume.array[z]) for z in zs])
        print(f"| {name.split('/')[0]} | {len(zs)} | {np.mean(on_crops >= 0.5):.2f} | {on_crops.mean():.2f} | "
              f"{np.mean(on_whole >= 0.5):.2f} | {on_whole.mean():.2f} |")


if __name__ == "__main__":
    main()
