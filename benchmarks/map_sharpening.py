"""Would sharper probability maps be better calibrated? Paper metrics and pixel log-loss vs a logit temperature.

Usage: ``python benchmarks/map_sharpening.py [--weights W] [--tta on]``. Validation slices only.

The toolbox's threshold-averaged metrics (meanDic, E-phi) reward confident maps, so a temperature T < 1 on the
logits raises them; it is only a fair change if it also lowers the log-loss, i.e. if the model is under-confident.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from select_on_val import DATA, REPO, score_on_val
from torch import nn

from covseg.metrics.folders import evaluate_folders
from covseg.networks.loading import load_weights
from covseg.networks.registry import get_network

TEMPERATURES = (0.35, 0.5, 0.7, 1.0, 1.4, 2.0)


def _logits(prob: np.ndarray) -> np.ndarray:
    p = np.clip(prob, 1 / 512, 1 - 1 / 512)
    return np.log(p / (1 - p))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(REPO / "bundles" / "infnet" / "models" / "model.pt"))
    parser.add_argument("--tta", choices=("on", "off"), default="on")
    args = parser.parse_args()
    network = load_weights(get_network("infnet"), args.weights)
    with tempfile.TemporaryDirectory() as tmp:
        _report(network, Path(tmp), args.tta == "on")


def _report(network: nn.Module, work: Path, tta: bool) -> None:
    """Predict the validation maps into ``work`` and print one row per temperature (and the 0.5 binarisation)."""
    score_on_val(network, DATA, work, tta=tta)
    masks = work / "val" / "masks"
    maps = {p.name: np.asarray(Image.open(p), dtype=np.float64) / 255 for p in sorted((work / "pred").glob("*.png"))}
    truth = {n: np.asarray(Image.open(masks / n).convert("L")) > 128 for n in maps}
    variants = {f"T={t}": (lambda z, t=t: 1 / (1 + np.exp(-z / t))) for t in TEMPERATURES}
    variants["binary at 0.5"] = lambda z: (z >= 0).astype(np.float64)
    print("variant         meanDic  S-alpha  E-phi    MAE    log-loss")
    for name, transform in variants.items():
        out = work / name.replace(" ", "_")
        out.mkdir()
        losses = []
        for file, prob in maps.items():
            q = transform(_logits(prob))
            Image.fromarray(np.round(q * 255).astype(np.uint8)).save(out / file)
            qc, g = np.clip(q, 1e-7, 1 - 1e-7), truth[file]
            losses.append(-(g * np.log(qc) + (~g) * np.log(1 - qc)))
        f = evaluate_folders(out, masks)
        loss = np.concatenate([x.ravel() for x in losses]).mean()
        print(f"{name:15s} {f['meanDic']:.3f}    {f['Sm']:.3f}    {f['meanEm']:.3f}    {f['MAE']:.3f}  {loss:.3f}")


if __name__ == "__main__":
    main()
