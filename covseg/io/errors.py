"""The one exception type for anything wrong with one input (or one output location), and the one-line reasons
made from library errors (:func:`first_line`, :func:`itk_reason`)."""

from __future__ import annotations

import re
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


def itk_reason(text: str) -> str:
    """The reason in a SimpleITK / ITK exception text, without source files, class names or addresses."""
    for marker in ("ITK ERROR:", "sitk::ERROR:"):
        if marker in text:
            text = text.split(marker, 1)[1]
            break
    text = re.sub(r"^\s*\w+\s*\(0x[0-9a-fA-F]+\):", "", text)  # "ImageFileReader(0x55d0):"
    text = re.sub(r"\S+\.(?:cxx|cpp|hxx|h|txx)(?::\d+)?:?", "", text)  # /work/src/Code/IO/....cxx:99:
    text = re.sub(r"Exception thrown in SimpleITK \w+:?", "", text)
    text = re.sub(r"\s+for\s+\"[^\"]*\"", "", text)  # the file name: the message names it already
    if "Unable to determine ImageIO reader" in text or "Could not create IO object" in text:
        return "no image reader recognises its content"
    return first_line(text) or "unknown SimpleITK error"


def first_line(text: str) -> str:
    """``text`` as one line of at most 200 characters."""
    return " ".join(text.split())[:200]
