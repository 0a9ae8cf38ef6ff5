"""Which values of a saved label are infection, from the segment names the viewer sent with it.

3D Slicer's MONAI Label module saves a label as one label map of its visible segments and sends their names with
it (``PUT /datastore/label``, form field ``params``: ``{"label_info": [{"name": "infection", "idx": 1}, …]}``);
MONAI Label keeps that in the datastore beside the label. A reader who ran ``covseg_lungs`` and
``covseg_infection`` and corrected both submits lung segments beside the infection. Training reads:

* the values of segments named like covseg's infection labels (``infection``, ``ground-glass opacity``,
  ``consolidation``; also ``ggo``, ``lesion``), when there is one;
* else every named value except those named like a lung (``right lung``, ``left lung``, ``lung``, ``lungs``);
* without names (a label uploaded by a script, or names in another form): every non-zero value, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["INFECTION_NAMES", "LUNG_NAMES", "infection_values", "segment_names"]

INFECTION_NAMES = frozenset({"infection", "ground-glass opacity", "consolidation", "ggo", "lesion"})
"""Segment names read as infection (lower case): the labels of covseg's infer tasks and two common names."""
LUNG_NAMES = frozenset({"right lung", "left lung", "lung", "lungs"})
"""Segment names never read as infection: the labels of ``covseg_lungs`` and the plain organ names."""


def segment_names(info: Mapping[str, Any] | None) -> dict[int, str]:
    """``{value: name}`` from a label's stored info (``label_info``: a list of ``{"name", "idx"}``); entries that
    are not in that form are left out, so anything else gives ``{}``."""
    entries = (info or {}).get("label_info")
    if not isinstance(entries, list):
        return {}
    names: dict[int, str] = {}
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        name, value = entry.get("name"), entry.get("idx")
        if isinstance(name, str) and isinstance(value, int) and not isinstance(value, bool) and 0 < value < 256:
            names[value] = name.strip().lower()
    return names


def infection_values(info: Mapping[str, Any] | None) -> tuple[int, ...] | None:
    """The label values to train as infection (see the module's docstring); None: every non-zero value."""
    names = segment_names(info)
    if not names:
        return None
    infection = [value for value, name in names.items() if name in INFECTION_NAMES]
    if infection:
        return tuple(sorted(infection))
    return tuple(sorted(value for value, name in names.items() if name not in LUNG_NAMES))
