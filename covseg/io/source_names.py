"""Names of found volumes: safe folder names (``[A-Za-z0-9._-]``), predictable and unique within one call.

* a file: its path relative to the input folder without the image suffix, ``/`` -> ``_``
  (``case1/ct.nii.gz`` -> ``case1_ct``); a file given explicitly: its stem (``ct``);
* a DICOM series: its folder relative to the input folder, or the folder's own name when the input is
  the series folder (``dicom``); when one folder holds several series: ``<folder>_<SeriesNumber>``
  (or ``_<last 8 UID digits>`` when series numbers are missing or repeated; :mod:`covseg.io.dicom_series`);
* remaining duplicates (``siteA/ct.nii.gz`` and ``siteB/ct.nii.gz`` given explicitly) get ``_<8 hex>``, a tag
  computed from the input's resolved path (:mod:`covseg.io.naming`), so the name does not depend on the
  order or the other inputs.
"""

from __future__ import annotations

import re
from pathlib import Path

from covseg.io.file_kinds import image_suffix
from covseg.io.naming import name_tag, source_key
from covseg.io.source import VolumeSource

__all__ = ["file_stem", "make_unique", "relative_name", "safe_name"]


def safe_name(text: str) -> str:
    """``text`` made safe as a folder name: ``[A-Za-z0-9._-]`` only, no leading dot, at most 100 chars."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return name[:100] or "volume"


def file_stem(path: Path) -> str:
    """The safe name of a file given by itself: its name without the image suffix."""
    suffix = image_suffix(path)
    name = path.name
    if suffix and name.lower().endswith(suffix) and len(name) > len(suffix):
        name = name[: -len(suffix)]
    return safe_name(name)


def relative_name(folder: Path, root: Path | None, leaf: str | None = None) -> str:
    """The safe name of ``folder`` (plus ``leaf``) relative to the input folder ``root`` (``/`` -> ``_``)."""
    parts: list[str] = []
    if root is not None:
        try:
            rel = folder.relative_to(root)
            parts = [p for p in rel.parts if p not in ("", ".")]
        except ValueError:
            parts = [folder.name]
        if not parts and leaf is None:
            parts = [root.resolve().name]
    else:
        parts = [folder.resolve().name]
    if leaf is not None:
        parts.append(leaf)
    return safe_name("_".join(parts))


def make_unique(sources: list[VolumeSource]) -> None:
    """Rename (in place) each source whose name an earlier one took, case-insensitively."""
    taken: set[str] = set()
    for src in sources:
        name, n = src.name, 1
        if name.lower() in taken:  # case-insensitive: safe on macOS/Windows file systems too
            name = f"{src.name}_{name_tag(source_key(src))}"  # stable: depends on this input only
        while name.lower() in taken:
            n += 1
            name = f"{src.name}_{n}"
        src.name = name
        taken.add(name.lower())
