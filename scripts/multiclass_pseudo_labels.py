"""Label COVID-SemiSeg's unlabelled slices with a multi-class head, for the head's self-training.

Usage: ``python scripts/multiclass_pseudo_labels.py --out FILE.npz [--head HEAD.pt] [--prior_bundle DIR]
[--dataset_dir DIR] [--limit N] [--threads T]``

Each of the 1,600 unlabelled slices is shown in the labelled slices' window (the coronacases and radiopaedia
volumes were written in their own, ``docs/windowing.md``), gets the binary bundle's infection map (the prior
channel), and the head's label map, flip-averaged with the bundle's ``merge_below``
(:mod:`covseg.engines.training.pseudo_classes`). ``--head``: a head checkpoint (e.g. a cross-validation fold's
``model_final.pt``); default the multi-class bundle's ``models/model.pt``. Train on the file with
``bundles/multiclass_infnet/configs/train.yaml --pseudo_labels FILE.npz``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "multiclass_infnet"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--head", type=Path, default=BUNDLE / "models" / "model.pt")
    parser.add_argument("--prior_bundle", type=Path, default=REPO / "bundles" / "infnet")
    parser.add_argument("--dataset_dir", type=Path, default=REPO.parent / "shared" / "data" / "covid-semiseg")
    parser.add_argument("--limit", type=int, default=None, help="only the first N slices (a smoke run)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    import torch
    from monai.bundle import ConfigParser

    from covseg.engines.training.priors import compute_priors
    from covseg.engines.training.pseudo_classes import label_slices, save_pseudo_set
    from covseg.io.slices import read_grey, unlabelled_items
    from covseg.networks.loading import load_bundle, load_weights
    from covseg.transforms.intensity import rewindow

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        items = unlabelled_items(args.dataset_dir, args.limit, rewindowed=True)
        config = ConfigParser()
        config.read_config(str(BUNDLE / "configs" / "inference.yaml"))
        head = load_weights(config.get_parsed_content("network_def"), args.head)
        prior = load_bundle(args.prior_bundle, "cpu")
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    meta = config.get("covseg", {})
    started = time.time()
    images = [rewindow(read_grey(Path(it["image"])), it["window"]) for it in items]
    priors = compute_priors(prior.network, images, prior.image_size, draws=1)
    labels = label_slices(head, images, priors, int(meta["image_size"]), float(meta["merge_below"]),
                          bool(meta["flip_average"]))
    save_pseudo_set(args.out, [it["name"] for it in items], images, priors, labels)
    with_ggo = sum(bool((lab == 1).any()) for lab in labels)
    with_cons = sum(bool((lab == 2).any()) for lab in labels)
    print(f"{args.out}: {len(labels)} slices labelled in {time.time() - started:.0f} s; GGO on {with_ggo}, "
          f"consolidation on {with_cons} of them")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
