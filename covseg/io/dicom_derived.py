"""What covseg's derived DICOM objects share (the SEG of :mod:`covseg.io.dicom_seg`, the SR of
:mod:`covseg.io.dicom_sr`): the algorithm's name and version, and highdicom's refusals as one input error."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydicom.sr.codedict import codes

from covseg.io.errors import CovsegInputError, first_line

# highdicom logs every module it copies into a SEG at INFO (about 40 lines a file), which floods the log of a bundle
# run or of MONAI Label, whose logging configs show INFO; its warnings still show.
logging.getLogger("highdicom").setLevel(logging.WARNING)

__all__ = ["AI_FAMILY", "algorithm_name_version", "highdicom_build"]

AI_FAMILY = codes.cid7162.ArtificialIntelligence  # DCM 123110: the algorithm family
"""Algorithm family of the model (DCM 123110 Artificial Intelligence)."""


def algorithm_name_version(model: dict | None, software_version: str = "") -> tuple[str, str]:
    """The algorithm's name and version recorded in a derived object: the model's ``name`` / ``version``
    (``"covseg"`` / covseg's version / ``"unknown"`` when absent)."""
    model = dict(model or {})
    return str(model.get("name") or "covseg"), str(model.get("version") or software_version or "unknown")


@contextmanager
def highdicom_build(source: str | Path, failure: str) -> Iterator[None]:
    """Build a highdicom object in this block: a value it refuses (``ValueError``, ``TypeError``) becomes
    ``CovsegInputError(source, "<failure> (<reason>)")``; its person-name warning (a name without ``^``) is muted."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        try:
            yield
        except (ValueError, TypeError) as exc:
            raise CovsegInputError(source, f"{failure} ({first_line(str(exc))})") from None
