"""How much infection binary Inf-Net weights mark where there is none, beside their validation Dice.

Usage: ``python benchmarks/infection_free_share.py WEIGHTS [WEIGHTS ...] [--threads 2]``.

For each weights file (a state dict of ``covseg.networks.infnet.InfNet``), three figures, none on a test split:

* validation meanDic, S-alpha and MAE on the 5 validation slices of the 50 labelled COVID-SemiSeg slices
  (``benchmarks/select_on_val.py``, the bundle's selection figure);
* on the non-COVID slices of both ``covid-ct-cls`` val splits (sars-cov-2-ct: 10 groups, ucsd-covid-ct): the mean
  share of each slice's pixels marked (p >= 0.5) and the share of slices with more than 1 % marked (caveat: non-COVID
  there includes other lung disease);
* on the real non-COVID scans of ``ct-volumes`` (chest-cip64, chest-2slice): the % of lung marked by
  ``covseg infer`` with these weights in the Inf-Net bundle's inference config (fp32).

Prints one markdown row per weights file.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from covseg.engines.inference.predictor import SlicePredictor
from covseg.io.classification import labelled_slices
from covseg.io.slices import read_grey
from covseg.networks.infnet import InfNet
from covseg.networks.loading import load_weights

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SCANS = {"chest-cip64": "chest-cip64/ct.nii.gz", "chest-2slice": "chest-2slice/ct.nii.gz"}


def non_covid_val_share(predictor: SlicePredictor, source: str) -> tuple[float, float, int]:
    """Mean marked share per slice, share of slices > 1 % marked, and the slice count, on ``source``'s val
    non-COVID slices."""
    items = [it for it in labelled_slices(DATA / "covid-ct-cls", source, "val") if it["label"] == 0]
    shares = []
    for start in range(0, len(items), 16):
        batch = [read_grey(Path(it["image"])) for it in items[start:start + 16]]
        shares += [float((prob[0] >= 0.5).mean()) for prob in predictor.predict(batch)]
    return float(np.mean(shares)), float(np.mean(np.asarray(shares) > 0.01)), len(shares)


def scan_share(weights: Path, work: Path) -> dict[str, float]:
    """% of lung marked on each real non-COVID scan by ``covseg infer`` with ``weights`` in the Inf-Net bundle."""
    bundle = work / "bundle"
    shutil.copytree(REPO / "bundles" / "infnet" / "configs", bundle / "configs")
    (bundle / "models").mkdir()
    shutil.copy(weights, bundle / "models" / "model.pt")
    out = work / "out"
    cmd = [sys.executable, "-m", "covseg", "infer", *(str(DATA / "ct-volumes" / p) for p in SCANS.values()),
           "--bundle", str(bundle), "--out", str(out), "--no-bf16", "--no-progress", "--no-figures"]
    subprocess.run(cmd, check=True, capture_output=True)
    volumes = json.loads((out / "summary.json").read_text())["volumes"]
    by_source = {v["source"]: v["lung_involvement_percent"] for v in volumes}
    return {name: by_source[str(DATA / "ct-volumes" / p)] for name, p in SCANS.items()}


def val_scores(weights: Path) -> str:
    """The validation row of ``select_on_val.py`` (meanDic, ... as it prints them)."""
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "select_on_val.py"), str(weights), "--tta", "off"],
                         check=True, capture_output=True, text=True, cwd=REPO)
    rows = [line for line in run.stdout.splitlines() if "tta=off" in line]
    return rows[0] if rows else run.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("| weights | sars val non-COVID: mean share marked / slices > 1 % | ucsd val non-COVID: same | "
          "chest-cip64 % lung | chest-2slice % lung |")
    print("|---|---|---|---|---|")
    for weights in args.weights:
        predictor = SlicePredictor(load_weights(InfNet(in_channels=1), weights), image_size=352, bf16=False)
        sars = non_covid_val_share(predictor, "sars-cov-2-ct")
        ucsd = non_covid_val_share(predictor, "ucsd-covid-ct")
        with tempfile.TemporaryDirectory() as tmp:
            scans = scan_share(weights, Path(tmp))
        print(f"| {weights} | {sars[0]:.4f} / {sars[1]:.3f} (n={sars[2]}) | {ucsd[0]:.4f} / {ucsd[1]:.3f} "
              f"(n={ucsd[2]}) | {scans['chest-cip64']:.2f} | {scans['chest-2slice']:.2f} |", flush=True)
        print(f"  val: {val_scores(weights)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
