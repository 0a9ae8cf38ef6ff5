"""Output names of volumes that are unique and stable across runs into one output folder.

A volume's output folder is ``<out>/<name>``, ``name`` from discovery (``ct`` for ``siteA/ct.nii.gz``).
When that name is already used, by another input of the same run or by a different input of an earlier
run into the same folder, the volume gets ``<name>_<tag>``: ``tag`` is the first 8 hex digits of the
SHA-1 of its *source key* (the resolved input path; plus ``#<SeriesInstanceUID>`` for a DICOM series).
So the tag depends on the input alone: ``siteB/ct.nii.gz`` is ``ct_<tag>`` in every run that needs the
tag, and an input always finds its own earlier folder again instead of replacing another input's.
Names need no tag in the common case (one input per name), which keeps them readable.

Who owns an existing folder is read from the summary's ``source_key`` entries (see
:mod:`covseg.reports.batch`), or, for a folder whose run was killed before its summary, from the
``source`` of the folder's ``report.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

__all__ = ["claim_names", "name_tag", "pick_name", "source_key"]


class _Named(Protocol):
    name: str
    path: Path
    kind: str
    series_uid: str | None


def source_key(src: _Named) -> str:
    """The identity of an input: its resolved path, plus ``#<SeriesInstanceUID>`` for a DICOM series."""
    try:
        path = str(Path(src.path).resolve())
    except OSError:
        path = os.path.abspath(src.path)
    uid = getattr(src, "series_uid", None)
    return f"{path}#{uid}" if src.kind == "dicom" and uid else path


def name_tag(key: str) -> str:
    """8 hex digits of the SHA-1 of ``key``."""
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:8]


def claim_names(sources: Sequence[_Named], out_dir: str | Path, owners: Mapping[str, str]) -> None:
    """Rename (in place) each source whose name is taken in this run or by another input's folder in ``out_dir``.

    ``owners``: name -> source key of the volumes recorded in the output folder's summary. Call under the
    output folder's lock (:func:`covseg.io.outlock.output_lock`).
    """
    taken: set[str] = set()
    for src in sources:
        src.name = pick_name(out_dir, src.name, source_key(src), owners, taken)
        taken.add(src.name.lower())


def pick_name(out_dir: str | Path, base: str, key: str, owners: Mapping[str, str] | None = None,
              taken: set[str] | frozenset[str] = frozenset()) -> str:
    """``base`` if ``<out_dir>/<base>`` is free or this input's, else ``<base>_<tag>`` (see the module docstring).

    ``taken``: lower-case names already given in this run.
    """
    out_dir = Path(out_dir)
    owners = owners or {}
    tagged = f"{base}_{name_tag(key)}"
    for name in (base, tagged):
        if name.lower() in taken:
            continue
        owner = owners.get(name) or _folder_owner(out_dir / name)
        if owner is None or owner in (key, key.partition("#")[0]):  # a report names a series by folder
            return name
    name, n = tagged, 2
    while name.lower() in taken or _folder_owner(out_dir / name) not in (None, key, key.partition("#")[0]):
        name, n = f"{tagged}_{n}", n + 1  # the same file given twice, or a foreign folder with our tag
    return name


def _folder_owner(folder: Path) -> str | None:
    """Source key of an existing output folder (``""`` when it cannot be told), ``None`` when it is free."""
    if not (folder.exists() or folder.is_symlink()):
        return None
    try:
        report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
        source = report["source"]
        return report.get("source_key") or str(Path(source).resolve())
    except (OSError, ValueError, KeyError, TypeError):
        return ""
