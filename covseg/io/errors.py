"""The one exception type for anything wrong with one input (or one output location)."""

from __future__ import annotations

from pathlib import Path


class CovsegInputError(Exception):
    """A problem with one input or output, reported as a single line ``"<path>: <reason>"``.

    Build it either from a full message, ``CovsegInputError("scan.nii.gz: file is empty")``, or from
    the two parts, ``CovsegInputError(path, "file is empty")``. Line breaks are folded into spaces, so
    ``str(err)`` is always one line. ``err.path`` and ``err.reason`` hold the parts when known.
    """

    def __init__(self, path_or_message: str | Path, reason: str | None = None) -> None:
        if reason is None:
            message = str(path_or_message)
            self.path: str | None = None
            self.reason: str = message
        else:
            self.path = str(path_or_message)
            self.reason = _one_line(reason)
            message = f"{self.path}: {self.reason}"
        super().__init__(_one_line(message))

    def __str__(self) -> str:
        return str(self.args[0])


def _one_line(text: str) -> str:
    return " ".join(str(text).split())
