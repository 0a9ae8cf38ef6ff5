"""Does Inf-Net's infection map add to the JCS classifier's evidence on covid-ct-cls slices?

Per slice of the `sars-cov-2-ct` val and test splits and the `ucsd-covid-ct` val split: the shipped classifier's
P(COVID-19) on the whole slice (as its `evaluate` scores it), and Inf-Net's (`bundles/infnet`) probability map on the
slice's grey lung box (`covseg.transforms.grey_lung.grey_lung_box`, as the classifier's `--lung_crop` finds it)
summarised three ways: mean, share >= 0.5 and 99th percentile. Prints the slice-level AUC of each and of
``(1 - w) x classifier + w x summary`` for w in {0.25, 0.5}. The bundle's selection rule is the sars val AUC.

Run:  python benchmarks/jcs_infnet_evidence.py [--scores FILE.csv]   (about 25 min on one Zen 3 core; an existing
      FILE is read instead of scoring again)
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "covid-ct-cls"
SPLITS = (("sars-cov-2-ct", "val"), ("ucsd-covid-ct", "val"), ("sars-cov-2-ct", "test"))
FIELDS = ("file", "source", "split", "label", "cls", "inf_mean", "inf_frac", "inf_p99", "crop_frac")
SUMMARIES = ("inf_mean", "inf_frac", "inf_p99")


def score(path: Path) -> None:
    """Write one row per slice of :data:`SPLITS` to ``path``."""
    import torch

    from covseg.engines.inference.predictor import SlicePredictor
    from covseg.engines.inference.slice_scorer import SliceScorer
    from covseg.io.classification import labelled_slices
    from covseg.io.slices import read_grey
    from covseg.networks.loading import load_bundle
    from covseg.transforms.crop import crop_to_box
    from covseg.transforms.grey_lung import grey_lung_box

    torch.set_num_threads(1)
    infnet, classifier = load_bundle(REPO / "bundles" / "infnet"), load_bundle(REPO / "bundles" / "jcs_classifier")
    predictor = SlicePredictor(infnet.network, image_size=352, batch_size=8)
    scorer = SliceScorer(classifier.network, classifier.image_size)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FIELDS)
        for source, split in SPLITS:
            items = labelled_slices(DATA, source, split)
            for start in range(0, len(items), 8):
                chunk = items[start:start + 8]
                greys = [read_grey(Path(item["image"])) for item in chunk]
                boxes = [grey_lung_box(g) for g in greys]
                crops = [g if box is None else crop_to_box(g, box) for g, box in zip(greys, boxes)]
                for item, prob, p_covid, grey, crop in zip(chunk, predictor.predict(crops), scorer(greys), greys,
                                                           crops):
                    prob = prob[0]
                    writer.writerow([item["name"], source, split, item["label"], f"{p_covid:.5f}",
                                     f"{prob.mean():.5f}", f"{(prob >= 0.5).mean():.5f}",
                                     f"{np.percentile(prob, 99):.5f}", f"{crop.size / grey.size:.3f}"])
            print(f"scored {source} {split}: {len(items)} slices", flush=True)


def table(path: Path) -> str:
    """The AUC table of the rows in ``path`` (markdown)."""
    from covseg.metrics.classification import roc_auc

    rows = list(csv.DictReader(path.open(newline="")))
    heads = ["classifier", *SUMMARIES] + [f"{1 - w:g} cls + {w:g} {k}" for k in SUMMARIES for w in (0.25, 0.5)]
    lines = ["| split | slices | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(heads)]
    for source, split in SPLITS:
        sub = [r for r in rows if r["source"] == source and r["split"] == split]
        labels = [int(r["label"]) for r in sub]
        col = {k: np.array([float(r[k]) for r in sub]) for k in ("cls", *SUMMARIES)}
        aucs = [roc_auc(col["cls"], labels)] + [roc_auc(col[k], labels) for k in SUMMARIES]
        aucs += [roc_auc((1 - w) * col["cls"] + w * col[k], labels) for k in SUMMARIES for w in (0.25, 0.5)]
        lines.append(f"| {source} {split} | {len(sub)} | " + " | ".join(f"{a:.4f}" for a in aucs) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scores", type=Path, default=Path("jcs_infnet_evidence.csv"),
                    help="per-slice scores (written when missing, else read)")
    args = ap.parse_args()
    if not args.scores.exists():
        score(args.scores)
    print(table(args.scores))


if __name__ == "__main__":
    main()
