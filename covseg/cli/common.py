"""What every ``covseg`` sub-command shares: exit statuses, the one-line error, logging to stderr."""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from covseg.engines.inference.dataset import VolumeDataset

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "config_error", "empty_folder_option", "error",
           "non_finite_option", "one_line", "read_first_ahead", "setup_logging"]


def error(message: str) -> None:
    """Print ``error: <message>`` as one line on stderr."""
    print(f"error: {message}", file=sys.stderr, flush=True)


def one_line(exc: BaseException) -> str:
    """An exception's message with its whitespace (newlines included) collapsed."""
    return " ".join(str(exc).split())


def empty_folder_option(command: str, **options: str | None) -> str | None:
    """The error line for the first folder option given as an empty (or blank) string, else ``None``.

    ``Path("")`` is the current folder: ``--out "$OUT"`` with ``OUT`` unset would write the results there."""
    for name, value in options.items():
        if value is not None and not value.strip():
            return f"--{name} is empty: give a folder (see covseg {command} --help)"
    return None


def non_finite_option(**options: float | None) -> str | None:
    """The error line for the first number option given as NaN or infinite (``type=float`` accepts ``nan``), else
    ``None``: NaN compares false with every score, so a NaN threshold silently decides every slice one way."""
    for name, value in options.items():
        if value is not None and not math.isfinite(value):
            return f"--{name.replace('_', '-')} must be a finite number, got {value}"
    return None


def config_error(exc: BaseException) -> int:
    """One error line for a failure while building a workflow from its config (MONAI wraps the cause)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    error(one_line(exc) or type(exc).__name__)
    return EXIT_USAGE


def read_first_ahead(found: VolumeDataset, out: Path, skip_done: bool = False) -> None:
    """Start reading and lung-masking the first volume of ``found`` in a forked child, now, while the command
    imports torch and MONAI and loads its models (:meth:`covseg.engines.inference.dataset.VolumeDataset.prefetch`).

    Not under ``torchrun`` (each rank reads its own share), nor when ``--continue`` (``skip_done``) will skip that
    volume. Call it before importing torch, after every usage check: a command that then stops early waits for the
    child."""
    if not found.data:
        return
    kept = skip_done and (out / found.data[0].name / "report.json").is_file()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not kept:
        found.prefetch(0, process=True)


class _LowerFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def setup_logging() -> None:
    """covseg's warnings go to today's stderr as ``warning: ...`` lines (once, however often ``main`` runs)."""
    root = logging.getLogger("covseg")
    if not any(getattr(h, "_covseg_cli", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler._covseg_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
    for h in root.handlers:  # main() may run several times in one process (tests, scripts): today's stderr
        if getattr(h, "_covseg_cli", False):
            if h.stream is not sys.stderr:
                h.stream = sys.stderr  # not setStream(): it flushes the old stream, which may be closed
            h.setFormatter(_LowerFormatter())
