"""Exploration (issue 12): split the infection into GGO / consolidation from Inf-Net's own encoder features.

Usage: ``python benchmarks/explore_split_head.py [--epochs 30] [--folds 5] [--max-folds N]``.

The shipped multi-class head sees the slice and the binary map (two channels, 0.5 M parameters trained from
scratch). Here a small head (1x1 reductions of the frozen Inf-Net 0.5.0 encoder's stages 1-3 to 64 channels each,
two 3x3 convolutions, one logit: consolidation rather than GGO) reads the features the binary model already has,
computed once per slice and flip. It is scored by cross-validation over the 50 labelled slices (never the test
split) with the **true infection extent**, so only the split counts: labelDice per class of the label map (GGO where
the split logit is below 0, consolidation above, inside the true infection), with the bundle's ``merge_below``
rule (0.006). The shipped head, given the true extent as its prior in the same folds, scored GGO 0.762 and
consolidation 0.508 (docs/benchmarks.md, 2026-12-04 late morning, no merge rule).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from covseg.io.slices import fold_split, semiseg_items
from covseg.metrics.multiclass import class_scores
from covseg.networks.infnet import InfNet
from covseg.networks.loading import load_weights

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "covid-semiseg"
SIZE = 352
FLIPS = ((), (3,), (2,), (2, 3))


def encoder_features(net: InfNet, image: np.ndarray) -> list[tuple[torch.Tensor, ...]]:
    """Stages 1-3 of the encoder (fp16) for each flip of the slice, in the flipped frame."""
    x = F.interpolate(torch.from_numpy(image)[None, None].float(), size=(SIZE, SIZE), mode="bilinear",
                      align_corners=False)
    out = []
    with torch.no_grad():
        for flip in FLIPS:
            x1, x2, x3, _ = net.backbone(((x.flip(flip) if flip else x) - net.mean) / net.std)
            out.append((x1.half(), x2.half(), x3.half()))
    return out


def label_at(label: np.ndarray, flip: tuple[int, ...]) -> torch.Tensor:
    """The class mask at 352² (nearest), flipped like the features."""
    t = F.interpolate(torch.from_numpy(label.astype(np.float32))[None, None], size=(SIZE, SIZE), mode="nearest")
    return t[0, 0].flip([d - 2 for d in flip]) if flip else t[0, 0]


class SplitHead(nn.Module):
    """Encoder stages 1-3 -> one logit per pixel: consolidation (> 0) or GGO (< 0) inside the infection."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.reduce = nn.ModuleList(nn.Conv2d(c, width, 1) for c in (256, 512, 1024))
        self.body = nn.Sequential(nn.Conv2d(3 * width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Dropout2d(0.1), nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width),
                                  nn.ReLU(), nn.Conv2d(width, 1, 1))

    def forward(self, *stages: torch.Tensor) -> torch.Tensor:
        size = stages[0].shape[-2:]
        z = torch.cat([F.interpolate(r(s), size=size, mode="bilinear", align_corners=False)
                       for r, s in zip(self.reduce, stages)], dim=1)
        return F.interpolate(self.body(z), size=(SIZE, SIZE), mode="bilinear", align_corners=False)


def train_head(names: list[str], cache: dict, epochs: int, seed: int = 0, batch: int = 4) -> SplitHead:
    """AdamW (lr 1e-3, poly), BCE over the truly infected pixels only, every flip of every slice once an epoch."""
    torch.manual_seed(seed)
    head = SplitHead().train()
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-4)
    pairs = [(n, k) for n in names for k in range(len(FLIPS))]
    steps = max(epochs * (len(pairs) // batch), 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(1 - s / steps, 0.0) ** 0.9)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(pairs))
        for b in range(0, len(order) - batch + 1, batch):
            chosen = [pairs[i] for i in order[b:b + batch]]
            stages = [torch.cat([cache[n]["feats"][k][s] for n, k in chosen]).float() for s in range(3)]
            label = torch.stack([cache[n]["labels"][k] for n, k in chosen])[:, None]
            infected = (label > 0).float()
            if infected.sum() == 0:
                continue
            loss = F.binary_cross_entropy_with_logits(head(*stages), (label == 2).float(), reduction="none")
            loss = (loss * infected).sum() / infected.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return head.eval()


def consolidation_share(head: SplitHead, entry: dict) -> torch.Tensor:
    """P(consolidation | infection) at 352², averaged over the flips."""
    with torch.no_grad():
        maps = [torch.sigmoid(head(*(t.float() for t in entry["feats"][k]))) for k in range(len(FLIPS))]
    return torch.stack([m.flip(f) if f else m for m, f in zip(maps, FLIPS)]).mean(0)[0, 0]


def label_dice(share: torch.Tensor, gt: np.ndarray, merge_below: float = 0.006) -> dict[str, float]:
    """labelDice per class of the label map: the true infection split at share 0.5, at the mask's size."""
    label = torch.where(label_at(gt, ()) > 0, 1 + (share >= 0.5).long(), torch.zeros_like(share, dtype=torch.long))
    label = F.interpolate(label[None, None].float(), size=gt.shape, mode="nearest")[0, 0].numpy().astype(np.int64)
    if merge_below and (label == 2).mean() < merge_below:
        label[label == 2] = 1
    return {c: s["dice"] for c, s in class_scores(label, gt).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--max-folds", type=int, default=None, help="stop after this many folds")
    args = parser.parse_args()
    start = time.perf_counter()
    net = load_weights(InfNet(in_channels=1), REPO / "bundles" / "infnet" / "models" / "model.pt").eval()
    items = semiseg_items(DATA, "train", labels="multiclass")
    cache = {it["name"]: {"feats": encoder_features(net, it["image"][0]),
                          "labels": [label_at(it["label"][0], f) for f in FLIPS]} for it in items}
    print(f"encoder features of {len(items)} slices x {len(FLIPS)} flips: {time.perf_counter() - start:.0f} s")
    scores: dict[str, list[float]] = {"ggo": [], "consolidation": []}
    for fold in range(args.max_folds or args.folds):
        train, held = fold_split(items, args.folds, fold, 0)
        head = train_head([it["name"] for it in train], cache, args.epochs)
        for it in held:
            for cls, value in label_dice(consolidation_share(head, cache[it["name"]]), it["label"][0]).items():
                scores[cls].append(value)
        print(f"after fold {fold} ({len(scores['ggo'])} held-out slices, {time.perf_counter() - start:.0f} s): "
              f"labelDice GGO {np.mean(scores['ggo']):.3f}, consolidation {np.mean(scores['consolidation']):.3f}",
              flush=True)


if __name__ == "__main__":
    main()
