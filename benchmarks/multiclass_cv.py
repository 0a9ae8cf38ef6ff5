"""Cross-validate a multi-class head setting on the 50 labelled COVID-SemiSeg slices (never the test split).

Usage: ``python benchmarks/multiclass_cv.py NAME --out DIR [--folds 5] [--record] [-- TRAIN.YAML OVERRIDES ...]``,
e.g. ``python benchmarks/multiclass_cv.py weighted --out /tmp/cv -- --class_weights "[1, 1, 3]"``.

Five validation slices cannot tell settings apart (docs/benchmarks.md: differences of 0.01-0.02 are noise), so
each setting trains once per fold (``train.yaml --folds F --fold k``; every slice is held out exactly once) and is
scored by the mean over folds of its last epoch's validation figures: toolbox meanDic per class (probability maps)
and labelDice per class (argmax label maps, as the paper's test script saves them). Folds share one prior cache.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "bundles" / "multiclass_infnet" / "configs" / "train.yaml"
KEYS = ("val_dice_ggo", "val_dice_consolidation", "val_label_dice_ggo", "val_label_dice_consolidation")
HEADER = ("| setting | overrides | meanDic GGO | meanDic cons. | labelDice GGO | labelDice cons. |\n"
          "|---|---|---|---|---|---|")
EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+) loss [\d.]+ ((?:\w+ [\d.]+ ?)+)")


def epoch_figures(log_text: str) -> dict[int, dict[str, float]]:
    """``{epoch: {metric: value}}`` from the trainer's per-epoch log lines."""
    out: dict[int, dict[str, float]] = {}
    for match in EPOCH_LINE.finditer(log_text):
        words = match.group(3).split()
        out[int(match.group(1))] = {k: float(v) for k, v in zip(words[::2], words[1::2])}
    return out


def run_fold(name: str, fold: int, folds: int, out: Path, overrides: list[str]) -> dict[str, float]:
    """Train one fold (skipped when its log already holds the last epoch); its last epoch's figures."""
    run_dir = out / name / f"fold_{fold}"
    log = run_dir.with_suffix(".log")
    figures = epoch_figures(log.read_text()) if log.exists() else {}
    if not figures or not (run_dir / "model_final.pt").exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(CONFIG),
               "--output_dir", str(run_dir), "--prior_cache", str(out / "priors"), "--folds", str(folds),
               "--fold", str(fold), *overrides]
        with open(log, "w") as fh:
            result = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, env=os.environ)
        if result.returncode != 0:
            raise SystemExit(f"{log}: training failed (exit {result.returncode})")
        figures = epoch_figures(log.read_text())
    return figures[max(figures)]


PRIORS = ("cache", "truth", "chain", "chain-tta")


def fold_logits(run_dir: Path, fold: int, folds: int, out: Path, overrides: list[str],
                prior: str = "cache") -> list[tuple]:
    """(class logits (C, h, w) at the network's size, class mask (H, W)) of each held-out slice of one fold, by its
    last weights. The head's prior channel: ``cache``, the binary model's map of the full-size slice (as in
    training); ``truth``, the true infection mask (an upper bound); ``chain``, the binary bundle run on the head's
    input as :class:`PriorGuidedSegmenter` does at inference; ``chain-tta``, that chain averaged over flips
    (``flip_average``)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from monai.bundle import ConfigParser

    from covseg.engines.inference.predictor import SlicePredictor
    from covseg.networks.loading import load_weights
    from covseg.networks.multiclass import PriorGuidedSegmenter

    if prior not in PRIORS:
        raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    parser.update({"output_dir": str(run_dir), "prior_cache": str(out / "priors"), "folds": folds, "fold": fold,
                   "device": "cpu"})
    for key, value in zip(overrides[::2], overrides[1::2]):
        parser[key.lstrip("-")] = value if value.startswith("$") else yaml.safe_load(value)
    parser.parse()
    head = load_weights(parser.get_parsed_content("network_def"), run_dir / "model_final.pt").eval()
    chain = None
    if prior.startswith("chain"):
        binary = parser.get_parsed_content("prior_network")
        network = PriorGuidedSegmenter(binary, head, parser.get_parsed_content("prior_image_size"),
                                       flip_average=prior == "chain-tta").eval()
        chain = SlicePredictor(network, image_size=int(parser.get_parsed_content("image_size")), channels_last=False)
    pairs = []
    with torch.inference_mode():
        for batch in parser.get_parsed_content("validate#dataloader"):
            image = batch["image"]
            if chain is not None:  # log-probabilities stand in for logits (same softmax)
                probs = chain.predict([s[0].numpy() for s in image[:, :1]])
                logits = torch.log(torch.from_numpy(np.stack(probs)).clamp_min(1e-12))
            else:
                if prior == "truth":
                    truth = F.interpolate((batch["label"] > 0).float(), size=image.shape[-2:], mode="nearest")
                    image = torch.cat([image[:, :1], truth.to(image.dtype)], dim=1)
                logits = head(image)
            pairs += [(logit.float(), mask[0].long()) for logit, mask in zip(logits, batch["label"])]
    return pairs


def label_dice_table(pairs: list[tuple], column: str, settings: dict[str, object]) -> list[str]:
    """Argmax label Dice per class over all held-out slices, one row per ``settings`` entry: a function from the
    (1, C, h, w) logits to the logits that are upsampled to the mask size and argmaxed."""
    import torch.nn.functional as F

    from covseg.metrics.multiclass import class_scores

    rows, names = [], []
    for label, change in settings.items():
        scores: dict[str, list[float]] = {}
        for logit, mask in pairs:
            up = F.interpolate(change(logit[None]), size=mask.shape, mode="bilinear", align_corners=False)[0]
            for cls, sc in class_scores(up.argmax(0).numpy(), mask.numpy(), 3).items():
                scores.setdefault(cls, []).append(sc["dice"])
        names = list(scores)
        rows.append(f"| {label} | " + " | ".join(f"{statistics.mean(v):.3f}" for v in scores.values()) + " |")
    return [f"| {column} | " + " | ".join(f"labelDice {c}" for c in names) + " |", "|---|" + "---|" * len(names),
            *rows]


def bias_scan(pairs: list[tuple], biases: list[float], cls: int = 2, merge_below: float = 0.0) -> list[str]:
    """Label Dice with ``bias`` added to class ``cls``'s logit (2: consolidation; 0: background, where a negative
    bias widens the infection), then ``merge_below`` as the bundle applies it."""
    import torch

    from covseg.transforms.class_merge import merge_small_class

    def shifted(bias: float):
        offset = torch.zeros(3)
        offset[cls] = bias
        return lambda logits: merge_small_class(logits + offset[:, None, None], 2, 1, merge_below)

    column = f"{('background', 'GGO', 'consolidation')[cls]} logit bias (merge_below {merge_below:g})"
    return label_dice_table(pairs, column, {f"{b:+.2f}": shifted(b) for b in biases})


def ensemble_pairs(members: list[list[tuple]]) -> list[tuple]:
    """Each held-out slice's class probabilities averaged over ``members`` (the heads' pairs of the same slices in
    the same order), as log-probabilities (the same argmax and merge as averaged probabilities)."""
    import torch

    out = []
    for group in zip(*members):
        masks = [mask for _, mask in group]
        if any(not torch.equal(masks[0], m) for m in masks[1:]):
            raise SystemExit("ensemble members hold out different slices: train them with the same --split_seed")
        probs = torch.stack([torch.softmax(logit, 0) for logit, _ in group]).mean(0)
        out.append((torch.log(probs.clamp_min(1e-12)), masks[0]))
    return out


def ensemble_scan(member_pairs: dict[str, list[tuple]], merge_below: float) -> list[str]:
    """Label Dice of the first head alone, then of the average of the first k heads, k = 2 .. all."""
    from covseg.transforms.class_merge import merge_small_class

    names = list(member_pairs)
    rows = {" + ".join(names[:k]): ensemble_pairs([member_pairs[n] for n in names[:k]]) for k in
            range(1, len(names) + 1)}
    table: list[str] = []
    for label, pairs in rows.items():
        part = label_dice_table(pairs, f"heads averaged (merge_below {merge_below:g})",
                                {label: lambda logits: merge_small_class(logits, 2, 1, merge_below)})
        table += part if not table else part[2:]
    return table


def merge_scan(pairs: list[tuple], fractions: list[float]) -> list[str]:
    """Label Dice when a slice's consolidation covering less than ``fraction`` of it becomes GGO
    (:func:`covseg.transforms.class_merge.merge_small_class`, as the bundle's ``merge_below``)."""
    from covseg.transforms.class_merge import merge_small_class

    def merged(fraction: float):
        return lambda logits: merge_small_class(logits, 2, 1, fraction)

    return label_dice_table(pairs, "merge_below", {f"{f:g}": merged(f) for f in fractions})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--record", action="store_true", help="append the row to docs/benchmarks.md")
    parser.add_argument("--bias-scan", type=float, nargs="*", default=None,
                        help="also: label Dice of all held-out slices with these consolidation logit biases")
    parser.add_argument("--background-scan", type=float, nargs="*", default=None,
                        help="also: label Dice with these background logit biases (negative: more infection), "
                             "each followed by --merge-below")
    parser.add_argument("--merge-below", type=float, default=0.0, help="merge_below applied after the bias scans")
    parser.add_argument("--merge-scan", type=float, nargs="*", default=None,
                        help="also: label Dice of all held-out slices with these merge_below fractions")
    parser.add_argument("--ensemble", nargs="+", default=None, metavar="NAME",
                        help="also: label Dice of this setting's heads averaged with those of the settings NAME "
                             "(trained into the same --out with the same folds, e.g. another --seed with "
                             "--split_seed 0), then --merge-below")
    parser.add_argument("--prior", choices=PRIORS, default="cache",
                        help="the heads' prior channel in the scans (see fold_logits)")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, overrides = parser.parse_args(argv[:cut]), argv[cut + 1:]
    per_fold = [run_fold(args.name, k, args.folds, args.out, overrides) for k in range(args.folds)]
    means = {k: statistics.mean(f[k] for f in per_fold) for k in KEYS}
    sds = {k: statistics.stdev(f[k] for f in per_fold) for k in KEYS}
    row = (f"| {args.name} | `{' '.join(overrides) or '(defaults)'}` | "
           + " | ".join(f"{means[k]:.3f} ± {sds[k]:.3f}" for k in KEYS) + " |")
    print(HEADER)
    print(row)
    scan: list[str] = []
    def held_out(name: str) -> list[tuple]:
        return [p for k in range(args.folds)
                for p in fold_logits(args.out / name / f"fold_{k}", k, args.folds, args.out, overrides, args.prior)]

    if args.bias_scan or args.background_scan or args.merge_scan or args.ensemble:
        pairs = held_out(args.name)
        if args.bias_scan:
            scan += bias_scan(pairs, args.bias_scan, 2, args.merge_below)
        if args.background_scan:
            scan += ([""] if scan else []) + bias_scan(pairs, args.background_scan, 0, args.merge_below)
        if args.merge_scan:
            scan += ([""] if scan else []) + merge_scan(pairs, args.merge_scan)
        if args.ensemble:
            members = {args.name: pairs, **{n: held_out(n) for n in args.ensemble}}
            scan += ([""] if scan else []) + ensemble_scan(members, args.merge_below)
    if scan:
        print("\n".join(scan))
    if args.record:
        sys.path.insert(0, str(Path(__file__).parent))
        from machine import append_record, describe
        append_record(f"Multi-class head, {args.folds}-fold cross-validation: {args.name}",
                      f"- command: `python benchmarks/multiclass_cv.py {args.name} --out DIR --folds {args.folds} "
                      f"-- {' '.join(overrides)}`\n- machine: {describe()}\n- figures: mean ± sd over folds of "
                      f"the last epoch's validation figures\n\n"
                      + HEADER + "\n" + row + "\n" + ("\n" + "\n".join(scan) + "\n" if scan else ""))


if __name__ == "__main__":
    main()
