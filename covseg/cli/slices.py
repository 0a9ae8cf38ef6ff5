"""``covseg slices``: labelled CT volumes -> a COVID-SemiSeg-layout slice dataset the bundles train and score on."""

from __future__ import annotations

import argparse

from covseg.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, empty_folder_option, error, one_line
from covseg.cli.options import label_classes, label_values

__all__ = ["add_parser", "run"]

_EPILOG = """\
examples:
  covseg slices scans/ --labels labels/ --out my-dataset
  covseg slices test-scans/ --labels test-labels/ --out my-dataset --split test --all-slices
  covseg slices imagesTr/ --labels labelsTr/ --out my-dataset --label-values 1,2
  covseg slices scans/ --labels class-labels/ --out my-dataset --label-classes 1,2

then train and score on it, starting from covseg's weights:
  python -m monai.bundle run training --config_file bundles/infnet/configs/train.yaml \\
      --dataset_dir my-dataset --init_weights bundles/infnet/models/model.pt --output_dir runs/mine
  python -m monai.bundle run evaluate --config_file bundles/infnet/configs/evaluate.yaml \\
      --dataset_dir my-dataset --weights runs/mine/model_best.pt --output_dir eval/

A volume's label is LABELS/<volume>.nii.gz (.nii, .mha, .mhd, .nrrd), on the volume's grid; nnU-Net's
<case>_0000 images find <case> labels. Slices are the windowed lung-box crops covseg infer feeds the
network, named <volume>.z<NNNN>.png; training holds out whole volumes for validation.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``slices`` on the ``covseg`` sub-command parser."""
    p = sub.add_parser("slices", help="cut labelled CT volumes into a slice dataset to train and score on",
                       description="Cut labelled CT volumes into the 2D slices covseg's models see (windowed lung-box "
                                   "crops) with their infection masks, in COVID-SemiSeg's folder layout, so the "
                                   "bundles' training and evaluate run on your own scans.",
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="CT volumes: files or folders (NIfTI, MHA, NRRD, DICOM)")
    p.add_argument("--labels", required=True, metavar="DIR", help="infection labels <volume>.nii.gz (> 0 infection)")
    p.add_argument("--out", required=True, metavar="DATASET", help="dataset folder (created; other volumes kept)")
    p.add_argument("--split", choices=("train", "test"), default="train",
                   help="train: DATASET/train/labeled (default); test: DATASET/test")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--negatives-per-positive", type=float, default=1.0, metavar="F",
                       help="lung slices without infection kept per slice with infection (default 1, at least 2 "
                            "per volume)")
    which.add_argument("--all-slices", action="store_true", help="every lung slice (for a test split)")
    values = p.add_mutually_exclusive_group()
    values.add_argument("--label-values", metavar="V[,V]", type=label_values, default=None,
                        help="label values that are infection (default: every non-zero value)")
    values.add_argument("--label-classes", "--multiclass", dest="label_classes", metavar="GGO,CONS",
                        type=label_classes, default=None,
                        help="the label values of ground-glass opacity and consolidation: infection is both, and "
                             "class masks are written too (masks-multiclass, masks-ggo, masks-consolidation), for "
                             "bundles/multiclass_infnet (--multiclass: its former name)")


def run(args: argparse.Namespace) -> int:
    """``covseg slices`` with parsed ``args``: one line per volume, the manifest, the next commands."""
    import math
    from pathlib import Path

    from covseg.engines.training.export_slices import export_volume, remove_staging, write_manifest
    from covseg.io.atomic import ensure_writable_dir
    from covseg.io.discover import find_volumes
    from covseg.io.errors import CovsegInputError

    problem = empty_folder_option("slices", labels=args.labels, out=args.out)
    if problem is None and (not math.isfinite(args.negatives_per_positive) or args.negatives_per_positive < 0):
        problem = f"--negatives-per-positive must be a number >= 0, got {args.negatives_per_positive}"
    if problem is None and not Path(args.labels).is_dir():
        problem = f"{args.labels}: labels folder not found"
    if problem:
        error(problem)
        return EXIT_USAGE
    try:
        out = ensure_writable_dir(args.out)
    except CovsegInputError as exc:
        error(one_line(exc))
        return EXIT_USAGE
    for left in remove_staging(out):
        print(f"warning: removed {left} (left by a killed run)")
    exported, failed = [], 0
    negatives = None if args.all_slices else args.negatives_per_positive
    for source in find_volumes(args.inputs):
        try:
            volume = export_volume(source, args.labels, out, args.split, negatives_per_positive=negatives,
                                   label_values=args.label_values, class_values=args.label_classes)
        except (CovsegInputError, OSError) as exc:
            error(one_line(exc))
            failed += 1
            continue
        exported.append(volume)
        manifest = write_manifest(out, args.split, [volume])  # after each volume: an interrupted run lists its own
        print(f"{volume.name}: {len(volume.rows)} slices ({volume.positives} with infection)", flush=True)
    if exported:
        slices = sum(len(volume.rows) for volume in exported)
        where = "train/labeled" if args.split == "train" else "test"
        print(f"{len(exported)} volume(s), {slices} slices in {out / where}; listed in {manifest}")
    if failed:
        print(f"{failed} input(s) failed (see the error lines above)")
    return EXIT_FAILED if failed or not exported else EXIT_OK
