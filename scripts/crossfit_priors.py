"""Out-of-fold infection priors for the multi-class head: each labelled slice's map by a binary model trained
without it.

Usage::

    python scripts/crossfit_priors.py --runs DIR --out FILE.npz [--folds 5] [--seed 0] [--bundle bundles/infnet]

``DIR/fold_<k>/model_final.pt`` are the binary bundle's networks trained with ``--folds F --fold k`` (the same
``--seed``): ``python -m monai.bundle run training --config_file bundles/infnet/configs/train.yaml --folds 5
--fold k --output_dir DIR/fold_k ...``. Every labelled COVID-SemiSeg slice is held out by exactly one fold, so the
file holds one map per slice; the multi-class head reads it with ``--prior_perturb crossfit --prior_crossfit FILE``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    from covseg.engines.training.priors import out_of_fold_priors
    from covseg.io.atomic import atomic_path
    from covseg.io.slices import fold_split, semiseg_items
    from covseg.metrics.binary import binary_scores
    from covseg.networks.loading import load_bundle

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, type=Path, help="folder of the fold runs fold_0 .. fold_<F-1>")
    parser.add_argument("--out", required=True, type=Path, help="the .npz to write")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="the fold runs' --seed (it orders the folds)")
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles" / "infnet", help="the binary bundle")
    parser.add_argument("--dataset_dir", type=Path, default=REPO.parent / "shared" / "data" / "covid-semiseg")
    args = parser.parse_args(argv)
    weights = [args.runs / f"fold_{k}" / "model_final.pt" for k in range(args.folds)]
    missing = [str(w) for w in weights if not w.is_file()]
    if missing:
        sys.exit(f"error: {missing[0]}: not found ({len(missing)} of {args.folds} fold weights missing)")
    labelled = semiseg_items(args.dataset_dir, "train")
    parts = [fold_split(labelled, args.folds, k, args.seed)[1] for k in range(args.folds)]
    loaded = [load_bundle(args.bundle, weights=w) for w in weights]
    maps = out_of_fold_priors([m.network for m in loaded], parts, loaded[0].image_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **maps)
    dice = [binary_scores(maps[it["name"]][0].astype(np.float32), it["label"][0])["dice"] for it in labelled]
    print(f"{args.out}: {len(maps)} out-of-fold priors from {args.folds} folds; "
          f"mean Dice@0.5 against the infection masks {np.mean(dice):.3f}")


if __name__ == "__main__":
    main()
