"""JCS slice classifier: slice-level figures, the patient-level threshold table (the paper's Table IV) and the
gate threshold, on the real data in ../shared/data.

1. Slice level (P(COVID-19) >= 0.5): AUC, accuracy, sensitivity, specificity, F1 on every val/test split of
   covid-ct-cls (sars-cov-2-ct test is the clean test; ucsd-covid-ct has only val); the AUC's 95 % interval
   resamples the groups (patients, or sars-cov-2-ct's blocks of 25 file numbers), 2,000 times.
2. Patient level: a group is positive when more than ``f`` x its slices are positive. Groups: the val and test
   groups of sars-cov-2-ct (blocks of 25 consecutive file numbers, the set's stand-in for patients) and the
   20 COVID-19 volumes behind COVID-SemiSeg's 1,600 unlabelled slices (``Data-1_<volume>_<slice>.jpg``, all
   positive, 80 slices each). ``f`` is chosen on the val groups (best sensitivity + specificity; the median of
   the tied candidates), never on a test group. The unlabelled slices were written with their source's own window
   (the 10 coronacases volumes a much wider one, ``docs/windowing.md``); they are scored as ``covseg diagnose``
   would see those volumes, re-windowed to the labelled slices' window (``--semiseg-as-stored``: as stored).
3. Gate threshold for ``covseg infer --gate``: half the lowest score of the 50 labelled COVID-SemiSeg training
   slices (every one holds infection); then counted on the 48 test slices: infected slices the gate would drop.

Run:  python benchmarks/jcs_classifier.py [--weights FILE] [--record]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from machine import append_record  # noqa: E402

from covseg.engines.runtime.cpu import precision_name, resolve_bf16  # noqa: E402
from covseg.engines.training.classifier import predict_scores  # noqa: E402
from covseg.io.classification import labelled_slices  # noqa: E402
from covseg.io.slices import list_images, read_grey  # noqa: E402
from covseg.metrics.classification import auc_interval, classification_scores  # noqa: E402
from covseg.networks.classifier import SliceClassifier  # noqa: E402
from covseg.networks.loading import load_weights  # noqa: E402
from covseg.transforms.classification import classifier_eval_transforms  # noqa: E402
from covseg.transforms.intensity import semiseg_window_of  # noqa: E402

DATA = REPO.parent / "shared" / "data"
FRACTIONS = (0.0, 0.04, 0.08, 0.12, 0.2, 0.3, 0.4, 0.5, 0.6)


def score_items(net, items, image_size, bf16, lung_crop=False):
    from monai.data import Dataset

    loader = DataLoader(Dataset(items, classifier_eval_transforms(image_size, lung_crop)), batch_size=16)
    return predict_scores(net, loader, "cpu", bf16)


def semiseg_volume_items(root: Path, as_stored: bool = False) -> list[dict]:
    """The unlabelled slices, grouped by volume; each names its window (re-windowed when scored) unless
    ``as_stored``."""
    items = []
    for p in list_images(root / "train" / "unlabeled" / "images"):
        volume = p.stem[len("Data-1_"):].rsplit("_", 1)[0]
        item = {"name": p.name, "image": str(p), "label": 1, "group": volume, "source": "semiseg"}
        items.append(item if as_stored else {**item, "window": semiseg_window_of(p.name)})
    return items


def group_counts(rows):
    groups = defaultdict(list)
    for r in rows:
        groups[r["group"]].append(r)
    return {g: (sum(x["score"] >= 0.5 for x in rs), len(rs), rs[0]["label"]) for g, rs in groups.items()}


def patient_table(groups: dict, fractions=FRACTIONS):
    out = []
    for f in fractions:
        pos = {g: n_pos > f * n for g, (n_pos, n, _) in groups.items()}
        p = [g for g, (_, _, y) in groups.items() if y == 1]
        n = [g for g, (_, _, y) in groups.items() if y == 0]
        sen = sum(pos[g] for g in p) / len(p) if p else float("nan")
        spec = sum(not pos[g] for g in n) / len(n) if n else float("nan")
        out.append({"fraction": f, "sensitivity": sen, "specificity": spec, "n_pos": len(p), "n_neg": len(n)})
    return out


def choose_fraction(val_table) -> float:
    best = max(r["sensitivity"] + r["specificity"] for r in val_table)
    tied = [r["fraction"] for r in val_table if r["sensitivity"] + r["specificity"] == best]
    return float(statistics.median_low(tied))


def main() -> int:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--weights", default=str(REPO / "bundles" / "jcs_classifier" / "models" / "model.pt"))
    ap.add_argument("--image-size", type=int, default=160)
    ap.add_argument("--lung-crop", action="store_true",
                    help="crop the covid-ct-cls slices to the lung box found on them (weights trained with "
                         "lung_crop; the COVID-SemiSeg slices are lung boxes already)")
    ap.add_argument("--bf16", default="auto", help="auto (default, as covseg diagnose) / true / false")
    ap.add_argument("--json", metavar="FILE", help="also write every figure and score to FILE")
    ap.add_argument("--record", action="store_true", help="append the tables to docs/benchmarks.md")
    ap.add_argument("--limit", type=int, help="smoke run: only the first N slices of each class / folder")
    ap.add_argument("--semiseg-as-stored", action="store_true",
                    help="score the unlabelled COVID-SemiSeg slices in their stored windows (before 2026-12-04)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    bf16 = resolve_bf16(args.bf16)
    net = load_weights(SliceClassifier(), args.weights)
    t0 = time.perf_counter()
    cls = DATA / "covid-ct-cls"
    items = labelled_slices(cls, None, ["val", "test"])
    if args.limit:
        keys = {(i["source"], i["split"], i["label"]) for i in items}
        items = [i for k in sorted(keys) for i in [x for x in items if (x["source"], x["split"], x["label"]) == k]
                 [:args.limit]]
    rows = score_items(net, items, args.image_size, bf16, args.lung_crop)
    semi = score_items(net, semiseg_volume_items(DATA / "covid-semiseg", args.semiseg_as_stored)[:args.limit],
                       args.image_size, bf16)
    cropped = " (covid-ct-cls slices lung-cropped)" if args.lung_crop else ""
    lines = [f"Weights `{args.weights}`, input {args.image_size}²{cropped}, {precision_name(bf16)}; "
             f"{platform.processor() or platform.machine()}, 1 thread, shared machine.", "",
             "| slices | n (groups) | AUC | AUC 95 % CI (groups resampled) | accuracy | sensitivity | specificity "
             "| F1 |", "|---|---|---|---|---|---|---|---|"]
    figures: dict = {}
    for key in ("sars-cov-2-ct/test", "sars-cov-2-ct/val", "ucsd-covid-ct/val"):
        source, split = key.split("/")
        part = [r for r in rows if r["source"] == source and r["split"] == split]
        s = classification_scores([r["score"] for r in part], [r["label"] for r in part])
        s["auc_ci95"] = auc_interval([r["score"] for r in part], [r["label"] for r in part],
                                     [r["group"] for r in part])
        figures[key] = s
        n_groups = len({r["group"] for r in part})
        lines.append(f"| {key} | {s['n']} ({n_groups}) | {s['auc']:.3f} | {s['auc_ci95'][0]:.3f}-"
                     f"{s['auc_ci95'][1]:.3f} | {s['accuracy']:.3f} | {s['sensitivity']:.3f} | "
                     f"{s['specificity']:.3f} | {s['f1']:.3f} |")
    semi_pos = float(np.mean([r["score"] >= 0.5 for r in semi]))
    shown = "as stored" if args.semiseg_as_stored else "re-windowed to the labelled slices' window"
    volumes = len({r["group"] for r in semi})
    lines.append(f"| COVID-SemiSeg unlabelled (all from COVID-19 volumes; {shown}) | {len(semi)} ({volumes}) | - | - "
                 f"| - | {semi_pos:.3f} | - | - |")

    sars = [r for r in rows if r["source"] == "sars-cov-2-ct"]
    val_groups = group_counts([r for r in sars if r["split"] == "val"])
    test_groups = group_counts([r for r in sars if r["split"] == "test"])
    semi_groups = group_counts(semi)
    val_t, test_t, semi_t = (patient_table(g) for g in (val_groups, test_groups, semi_groups))
    chosen = choose_fraction(val_t)
    figures["patient"] = {"chosen_fraction": chosen, "val": val_t, "test": test_t, "semiseg": semi_t,
                          "semiseg_positive_slices": {g: c[0] for g, c in semi_groups.items()}}
    lines += ["", "Patient level: positive when more than f x its slices score >= 0.5 (f chosen on the sars val "
              f"groups: **{chosen}**).", "",
              f"| f | (count on 25 slices) | val Sen ({val_t[0]['n_pos']} groups) | val Spec ({val_t[0]['n_neg']}) | "
              f"test Sen ({test_t[0]['n_pos']}) | test Spec ({test_t[0]['n_neg']}) | SemiSeg volumes positive "
              f"({semi_t[0]['n_pos']}) |", "|---|---|---|---|---|---|---|"]
    for v, t, s in zip(val_t, test_t, semi_t):
        mark = " (chosen)" if v["fraction"] == chosen else ""
        lines.append(f"| {v['fraction']}{mark} | > {v['fraction'] * 25:g} | {v['sensitivity']:.2f} | "
                     f"{v['specificity']:.2f} | {t['sensitivity']:.3f} | {t['specificity']:.3f} | "
                     f"{round(s['sensitivity'] * s['n_pos'])} / {s['n_pos']} |")

    semiseg = DATA / "covid-semiseg"
    train_scores = []
    for p in list_images(semiseg / "train" / "labeled" / "images")[:args.limit]:
        if read_grey(semiseg / "train" / "labeled" / "masks" / f"{p.stem}.png").max() > 0.5:
            train_scores.append(score_items(net, [{"name": p.name, "image": str(p), "label": 1}], args.image_size,
                                            bf16)[0]["score"])
    gate = 0.5 * min(train_scores)
    test_items = [{"name": p.name, "image": str(p), "label": 1} for p in list_images(semiseg / "test" / "images")
                  if read_grey(semiseg / "test" / "masks" / f"{p.stem}.png").max() > 0.5][:args.limit]
    test_scores = [r["score"] for r in score_items(net, test_items, args.image_size, bf16)]
    dropped = sum(s < gate for s in test_scores)
    figures["gate"] = {"threshold": gate, "train_min": min(train_scores), "n_train": len(train_scores),
                       "test_infected": len(test_scores), "test_dropped": dropped,
                       "test_min": min(test_scores)}
    lines += ["", f"Gate threshold (half the lowest score of the {len(train_scores)} infected labelled training "
              f"slices, lowest {min(train_scores):.4f}): **{gate:.4f}**. On the test slices: "
              f"{dropped} of {len(test_scores)} infected slices would be gated away (lowest test score "
              f"{min(test_scores):.4f}).", "", f"Scoring took {time.perf_counter() - t0:.0f} s."]
    text = "\n".join(lines)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"figures": figures, "rows": rows, "semiseg": semi}, indent=1,
                                              default=float))
    if args.record:
        append_record("JCS slice classifier: slices, patients, gate threshold",
                      f"`python benchmarks/jcs_classifier.py --record`\n\n{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
