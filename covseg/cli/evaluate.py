"""``covseg evaluate``: score folders of 2D prediction maps against masks with the Inf-Net toolbox conventions, or
folders of 3D masks against reference labels as ``covseg infer --labels`` scores its own
(:mod:`covseg.metrics.volumes`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from covseg.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, error, one_line
from covseg.cli.options import add_label_value_args

__all__ = ["add_parser", "run"]

_EPILOG = """\
examples:
  covseg evaluate predictions/ COVID-SemiSeg/test/masks
  covseg evaluate predictions/ masks/ --json
  covseg evaluate predictions/ masks/ --csv per_image.csv --name Inf-Net

Predictions <stem>.png|jpg (0-255 maps) are matched to masks <stem>.png and scored with the
Inf-Net authors' toolbox conventions; without --json the paper's table row is printed
(Dice, Sen., Spec., S-alpha, E-phi mean, MAE).

3D volumes (any tool's masks: nnU-Net's, your own, covseg infer's):
  covseg evaluate nnunet_predictions/ labelsTs/
  covseg evaluate covseg_out/ labels/ --label-values 3 --csv per_volume.csv
  covseg evaluate covseg_out/ labels/ --label-classes 1,2 --json

A PRED_DIR of volumes (<case>.nii.gz, .nii, .mha, .mhd, .nrrd) or covseg infer's output folder
(<volume>/infection_mask.nii.gz) is scored volume by volume as covseg infer --labels scores its
own: each prediction (> 0 = infection) against GT_DIR/<case>.<ext> (also found without nnU-Net's
_0000), the label on the prediction's grid; one row per volume (Dice, Sen., Spec., Prec., IoU,
MAE) and the mean over the volumes. MAE is that of the binary mask, i.e. its share of wrong voxels
(covseg infer's report.json scores its probability map, so its MAE differs slightly).
With --label-classes a prediction's values are its classes (1 GGO, 2 consolidation; covseg
infer's infection_labels.nii.gz). A volume that cannot be scored is one error line; the others
are scored (exit 1 if any failed).
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``evaluate`` on the ``covseg`` sub-command parser."""
    p = sub.add_parser("evaluate", help="score 2D prediction maps (paper table row) or 3D masks against references",
                       description="Score 2D prediction maps against ground-truth masks with the Inf-Net "
                                   "evaluation-toolbox conventions, or 3D masks against reference labels per volume "
                                   "as covseg infer --labels does.",
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pred_dir", metavar="PRED_DIR", help="folder of prediction maps (<stem>.png|jpg), of volumes "
                                                        "(<case>.nii.gz …) or covseg infer's output folder")
    p.add_argument("gt_dir", metavar="GT_DIR", help="folder of masks (<stem>.png) or of labels (<case>.nii.gz …)")
    p.add_argument("--json", action="store_true", help="print one JSON object of all figures")
    p.add_argument("--csv", metavar="FILE", help="write per-image (per-volume) scores to FILE")
    p.add_argument("--name", default=None, help="model name shown in the table row (2D maps)")
    add_label_value_args(p, "the labels (volumes)", "multi-class predictions'")


def run(args: argparse.Namespace) -> int:
    """``covseg evaluate`` with parsed ``args``: the table row (or JSON), optionally a per-image CSV."""
    from covseg.metrics.folders import evaluate_folders
    from covseg.metrics.tables import format_table_row, per_image_csv_text
    from covseg.metrics.volumes import prediction_kind

    if _same_folder(args.pred_dir, args.gt_dir):
        error(f"{args.gt_dir}: is PRED_DIR itself: each prediction would be scored against itself (give the folder "
              "of reference masks)")
        return EXIT_USAGE
    try:
        kind = prediction_kind(args.pred_dir)
    except ValueError as exc:
        error(one_line(exc))
        return EXIT_USAGE
    if kind == "volumes":
        return _run_volumes(args)
    if args.label_values is not None or args.label_classes is not None:
        option = "--label-values" if args.label_values is not None else "--label-classes"
        error(f"{option} goes with volume predictions (NIfTI, MHA, NRRD), not with 2D maps in {args.pred_dir}")
        return EXIT_USAGE
    try:
        figures = evaluate_folders(args.pred_dir, args.gt_dir)
    except ValueError as exc:
        error(one_line(exc))
        return EXIT_FAILED
    per_image = figures.pop("per_image", [])
    if args.csv and not _write_csv(args.csv, per_image_csv_text(per_image)):
        return EXIT_USAGE
    if args.json:
        import json

        print(json.dumps({k: (float(v) if isinstance(v, float) else v) for k, v in figures.items()}, indent=2))
    else:
        print(format_table_row(figures, name=args.name))
        print(f"({figures.get('n_images', len(per_image))} images)")
    return EXIT_OK


def _run_volumes(args: argparse.Namespace) -> int:
    """``covseg evaluate`` on volumes: an error line per volume that fails, warnings on stderr; the per-volume table
    (or one JSON object: ``volumes``, ``scores``), optionally a per-volume CSV."""
    import sys

    from covseg.io.strict_json import json_text
    from covseg.metrics.tables import per_volume_csv_text, volume_table
    from covseg.metrics.volumes import score_volumes
    from covseg.reports.label_scores import LabelValues
    from covseg.reports.score_summary import score_summary

    if args.name is not None:
        error("--name names the 2D table row; the volume table has none (leave it out)")
        return EXIT_USAGE
    if not Path(args.gt_dir).is_dir():
        error(f"{args.gt_dir}: not a folder (give the folder of reference labels)")
        return EXIT_USAGE
    values = LabelValues.from_config(args.label_values, args.label_classes)

    def tell(entry: dict) -> None:
        if entry["status"] != "ok":
            error(entry["error"])
        for warning in entry.get("warnings", ()):
            print(f"warning: {entry['name']}: {warning}", file=sys.stderr, flush=True)

    entries = score_volumes(args.pred_dir, args.gt_dir, values, on_result=tell)
    if args.csv and not _write_csv(args.csv, per_volume_csv_text(entries)):
        return EXIT_USAGE
    if args.json:
        print(json_text({"volumes": entries, "scores": score_summary(entries)}))
    else:
        print(volume_table(entries))
    return EXIT_FAILED if any(e["status"] != "ok" for e in entries) else EXIT_OK


def _write_csv(path: str, text: str) -> bool:
    """Write ``--csv``'s file atomically; False after one error line when it cannot be written."""
    from covseg.io.atomic import atomic_write_text
    from covseg.io.errors import CovsegInputError

    try:
        atomic_write_text(path, text)
    except (CovsegInputError, OSError) as exc:
        error(str(exc))
        return False
    return True


def _same_folder(pred_dir: str, gt_dir: str) -> bool:
    """Whether ``pred_dir`` and ``gt_dir`` are one folder (by another path or link too)."""
    try:
        return Path(pred_dir).is_dir() and os.path.samefile(pred_dir, gt_dir)
    except OSError:
        return False
