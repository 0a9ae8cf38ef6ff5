"""DICOM files grouped into series, one :class:`VolumeSource` each.

Files are grouped by ``SeriesInstanceUID`` (files with an empty UID: by folder, image size and orientation), so a
folder holding two series gives two volumes. A file repeating an instance already in its series (same
``SOPInstanceUID``: a copy, e.g. the same series exported twice) is left out, with a warning. A series made only
of localizer (scout) images or of colour images (:attr:`covseg.io.dicom_header.DicomInfo.not_slice`) is left out.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from covseg.io.dicom_header import DicomInfo
from covseg.io.source import VolumeSource
from covseg.io.source_names import relative_name, safe_name

__all__ = ["series_sources"]


def series_sources(dicoms: list[tuple[Path, DicomInfo]], root: Path | None,
                   left_out: list[Path] | None = None) -> list[VolumeSource]:
    """One source per series; a series of localizer or colour images only goes to ``left_out`` instead."""
    groups: dict[tuple, list[tuple[Path, DicomInfo]]] = {}
    repeats: dict[tuple, list[Path]] = {}
    instances: set[tuple[tuple, str]] = set()
    for path, info in sorted(dicoms, key=lambda d: d[0]):
        if info.instance_uid and (info.group, info.instance_uid) in instances:  # a copy of an instance: no new data
            repeats.setdefault(info.group, []).append(path)
            continue
        instances.add((info.group, info.instance_uid))
        groups.setdefault(info.group, []).append((path, info))
    for group, members in list(groups.items()):
        if all(info.not_slice for _, info in members):
            del groups[group]
            if left_out is not None:
                left_out.extend(p for p, _ in members)
    # name every group after its folder; folders holding several series get a per-series suffix
    by_folder: dict[str, list[tuple[Path, list[tuple[Path, DicomInfo]]]]] = {}
    for members in groups.values():
        files = sorted(p for p, _ in members)
        folder = Path(os.path.commonpath([str(p.parent) for p in files]))
        base = relative_name(folder, root) if root is not None else safe_name(folder.resolve().name)
        by_folder.setdefault(base, []).append((folder, members))
    out: list[VolumeSource] = []
    for base, entries in by_folder.items():
        numbers = [m[0][1].series_number for _, m in entries]
        use_numbers = all(numbers) and len(set(numbers)) == len(numbers)
        entries.sort(key=lambda e: (_num_key(e[1][0][1].series_number), e[1][0][1].series_uid))
        for index, (folder, members) in enumerate(entries, start=1):
            info = members[0][1]
            name = base
            if len(entries) > 1:
                if use_numbers:
                    tag = info.series_number
                elif info.series_uid:
                    tag = re.sub(r"\D", "", info.series_uid)[-8:] or str(index)
                else:
                    tag = str(index)
                name = safe_name(f"{base}_{tag}")
            warnings = []
            copies = repeats.get(info.group, [])
            if copies:
                warnings.append(f"{len(copies)} DICOM file(s) repeat instances of this series (same "
                                f"SOPInstanceUID) and were left out, e.g. {copies[0]}")
            if not info.series_uid:
                warnings.append("DICOM files have no SeriesInstanceUID; grouped by folder, image size "
                                "and orientation")
            out.append(VolumeSource(name=name, path=folder, kind="dicom",
                                    files=sorted(p for p, _ in members),
                                    series_uid=info.series_uid or None, warnings=warnings))
    out.sort(key=lambda s: (str(s.path), s.name))
    return out


def _num_key(number: str) -> tuple[int, float, str]:
    """Sort key of a SeriesNumber: numbers in numeric order, then the rest as text."""
    try:
        return (0, float(number), number)
    except ValueError:
        return (1, 0.0, number)
