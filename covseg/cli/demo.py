"""``covseg demo``: write a chest-CT phantom with known lungs and lesions, run ``covseg infer`` on it, score it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from covseg.cli.common import EXIT_USAGE, error
from covseg.cli.options import add_model_args, add_output_args, check_model_args
from covseg.synthetic.demo import DEMO_SHAPE

__all__ = ["DEMO_SHAPE", "add_parser", "parse_shape", "run"]

_EPILOG = """\
examples:
  covseg demo
  covseg demo --out demo_out/ --save-prob

Generates a chest-CT phantom with known lungs and lesions, runs `covseg infer` on it with the default
model (the shipped Inf-Net bundle, bundles/infnet; if its models/model.pt is missing, an untrained Inf-Net:
then the infection outputs are not meaningful, the lung figures are) and scores it against the phantom's
true lesions.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``demo`` on the ``covseg`` sub-command parser."""
    p = sub.add_parser("demo", help="run inference on a generated chest phantom",
                       description="Generate a chest-CT phantom and run `covseg infer` on it.",
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", "-o", metavar="DIR", help="output folder (default: a new temporary folder)")
    add_model_args(p)
    p.add_argument("--save-prob", action="store_true", help="also write infection_prob.nii.gz")
    p.add_argument("--phantom-shape", metavar="Z,Y,X", default=",".join(map(str, DEMO_SHAPE)),
                   help="phantom size in voxels (default %(default)s)")
    add_output_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_shape(text: str) -> tuple[int, int, int] | None:
    """``"Z,Y,X"`` (or ``ZxYxX``) as three positive ints, else ``None``."""
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        return None
    return shape if len(shape) == 3 and min(shape) >= 1 else None  # type: ignore[return-value]


def run(args: argparse.Namespace) -> int:
    """``covseg demo`` with parsed ``args`` (also ``covseg infer`` without INPUT)."""
    from covseg.cli.infer import run_infer
    from covseg.io.errors import CovsegInputError
    from covseg.synthetic.demo import write_demo_input

    shape = parse_shape(args.phantom_shape)
    if shape is None or min(shape[1:]) < 16:
        error(f"--phantom-shape {args.phantom_shape!r}: expected Z,Y,X with Y, X >= 16")
        return EXIT_USAGE
    if not check_model_args(args, apply=False):  # before the phantom is written: a usage error leaves nothing
        return EXIT_USAGE
    import tempfile

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="covseg-demo-"))
    try:
        ct, labels = write_demo_input(out / "demo", shape)
    except CovsegInputError as exc:
        error(str(exc))
        return EXIT_USAGE
    print(f"demo: chest phantom {shape[2]}x{shape[1]}x{shape[0]} written to {ct} (true lesions in {labels}/)",
          file=sys.stderr)
    code = run_infer([str(ct)], out, args, str(labels))
    print(f"demo: masks and report in {out / 'phantom'}/ ; input phantom in {ct.parent}/")
    return code
