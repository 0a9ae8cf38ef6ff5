"""The ``covseg`` command: ``infer`` CT volumes, ``evaluate`` 2D prediction folders, run a ``demo`` on a phantom,
``diagnose`` (JCS), ``label-server`` (MONAI Label), and cut labelled volumes into a training set (``slices``).
Each sub-command lives in its own module of :mod:`covseg.cli`; this one assembles the parser and dispatches.

Exit status: 0 everything succeeded; 1 at least one input failed (the others were processed) or evaluation
failed; 2 usage error, unusable model, or an output folder that cannot be written; 130 interrupted.
See docs/cli.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from covseg.cli import demo, diagnose, evaluate, infer, label_server, slices  # the standard library only: cheap
from covseg.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, setup_logging

__all__ = ["build_parser", "main"]

COMMANDS = {"infer": infer, "evaluate": evaluate, "demo": demo, "label-server": label_server, "diagnose": diagnose,
            "slices": slices}
"""Sub-command name -> its module (``add_parser(sub)`` and ``run(args)``), in the order ``--help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``covseg`` and its sub-commands."""
    from covseg import __version__

    parser = argparse.ArgumentParser(
        prog="covseg",
        description="COVID-19 lung-infection segmentation of chest CT (Inf-Net on MONAI).",
        epilog="examples:\n  covseg demo\n  covseg infer scan.nii.gz --out results/\n"
               "  covseg evaluate predictions/ masks/ --json\n\nrun `covseg COMMAND --help` for details.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"covseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``covseg`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version (0) or a usage error (2)
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    setup_logging()
    from covseg.engines.inference.interrupts import quiet_ignite_interrupts, terminate_as_interrupt

    quiet_ignite_interrupts()
    command = COMMANDS[args.command]
    try:
        if command is label_server:  # handles its own SIGTERM (stops the server's process group)
            return label_server.run(args)
        with terminate_as_interrupt():  # SIGTERM stops a run the way Ctrl-C does
            return command.run(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    from covseg.cli.leave import entry

    entry()
