"""One ``error:`` line instead of MONAI's traceback when a bundle run (``python -m monai.bundle run training |
evaluate | ...``) stops on bad input: a missing or unreadable file, a mask of another size, an empty split, an
option value no run can use.

MONAI's config runner wraps whatever a config expression raises in ``RuntimeError("Failed to evaluate ...")`` (or
"Failed to instantiate component"), so the reason, which covseg's readers and trainers word as ``<path or option>:
<reason>``, ends about 50 lines of traceback. :func:`one_line_errors`, the first step of each training and
evaluation config's ``initialize``, installs an exception hook that prints the outermost ``ValueError`` or
``OSError`` (a file not found, an unreadable image) of such a chain as one line; other exceptions (bugs) keep
their traceback, and ``COVSEG_TRACEBACK=1`` keeps it for all. The exit status stays 1.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType

__all__ = ["error_line", "input_error", "one_line_errors"]

INPUT_ERRORS = (ValueError, OSError)


def input_error(exc: BaseException) -> BaseException | None:
    """The outermost ``ValueError`` / ``OSError`` of ``exc``'s ``raise ... from`` chain (``__cause__``), or None.

    Outermost: covseg words a library's error as ``<path>: <reason> (...)`` and raises it from that error
    (PIL's "image file is truncated" names no file), so the first one met from the outside is the one to show."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, INPUT_ERRORS):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None


def error_line(exc: BaseException) -> str | None:
    """``"error: <reason>"`` (one line) when ``exc`` is, or was raised from, a bad-input error, else None."""
    cause = input_error(exc)
    if cause is None or os.environ.get("COVSEG_TRACEBACK", "") not in ("", "0"):
        return None
    reason = " ".join(str(cause).split()) or type(cause).__name__
    return f"error: {reason}"


def one_line_errors() -> None:
    """Install the hook (once per process); exceptions it does not shorten go to the hook installed before."""
    previous = sys.excepthook
    if getattr(previous, "covseg_one_line", False):
        return

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        line = error_line(value)
        if line is None:
            previous(kind, value, tb)
        else:
            print(line, file=sys.stderr, flush=True)

    hook.covseg_one_line = True  # type: ignore[attr-defined]
    sys.excepthook = hook
