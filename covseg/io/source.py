"""One volume found by :func:`covseg.io.discover.find_volumes`: a NIfTI/ITK file or one DICOM series."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from covseg.io.file_kinds import Kind

__all__ = ["VolumeSource"]


@dataclass
class VolumeSource:
    """One volume to read: a NIfTI/ITK file or one DICOM series.

    ``path`` is the file, or for DICOM the folder holding the series (common parent of ``files``).
    ``files`` lists the DICOM files (empty for other kinds). ``error`` is set when discovery already
    knows the source cannot be read; ``warnings`` are carried over to the :class:`CTVolume`.
    """

    name: str
    path: Path
    kind: Kind
    files: list[Path] = field(default_factory=list)
    series_uid: str | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    unreadable_beside: list[Path] = field(default_factory=list)
    """DICOM files in the series' folders whose header cannot be read: perhaps slices of it (see the reader's
    missing-slice error, which names them)."""
