"""``covseg evaluate``: score folders of 2D prediction maps against masks with the Inf-Net toolbox conventions."""

from __future__ import annotations

import argparse

from covseg.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, error, one_line

__all__ = ["add_parser", "run"]

_EPILOG = """\
examples:
  covseg evaluate predictions/ COVID-SemiSeg/test/masks
  covseg evaluate predictions/ masks/ --json
  covseg evaluate predictions/ masks/ --csv per_image.csv --name Inf-Net

Predictions <stem>.png|jpg (0-255 maps) are matched to masks <stem>.png and scored with the
Inf-Net authors' toolbox conventions; without --json the paper's table row is printed
(Dice, Sen., Spec., S-alpha, E-phi mean, MAE).
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``evaluate`` on the ``covseg`` sub-command parser."""
    p = sub.add_parser("evaluate", help="score 2D prediction maps against masks (paper table row)",
                       description="Score prediction maps against ground-truth masks with the Inf-Net "
                                   "evaluation-toolbox conventions.",
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pred_dir", metavar="PRED_DIR", help="folder of prediction maps (<stem>.png|jpg)")
    p.add_argument("gt_dir", metavar="GT_DIR", help="folder of masks (<stem>.png)")
    p.add_argument("--json", action="store_true", help="print one JSON object of all figures")
    p.add_argument("--csv", metavar="FILE", help="write per-image scores to FILE")
    p.add_argument("--name", default=None, help="model name shown in the table row")


def run(args: argparse.Namespace) -> int:
    """``covseg evaluate`` with parsed ``args``: the table row (or JSON), optionally a per-image CSV."""
    from covseg.io.atomic import atomic_write_text
    from covseg.io.errors import CovsegInputError
    from covseg.metrics.folders import evaluate_folders
    from covseg.metrics.tables import format_table_row, per_image_csv_text

    try:
        figures = evaluate_folders(args.pred_dir, args.gt_dir)
    except ValueError as exc:
        error(one_line(exc))
        return EXIT_FAILED
    per_image = figures.pop("per_image", [])
    if args.csv:
        try:
            atomic_write_text(args.csv, per_image_csv_text(per_image))
        except (CovsegInputError, OSError) as exc:
            error(str(exc))
            return EXIT_USAGE
    if args.json:
        import json

        print(json.dumps({k: (float(v) if isinstance(v, float) else v) for k, v in figures.items()}, indent=2))
    else:
        print(format_table_row(figures, name=args.name))
        print(f"({figures.get('n_images', len(per_image))} images)")
    return EXIT_OK
