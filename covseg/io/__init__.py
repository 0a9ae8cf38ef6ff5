"""covseg.io: find, read and write CT volumes (see docs/io.md).

The names below are loaded on first use (PEP 562), so that importing one submodule (say ``covseg.io.atomic`` or
``covseg.io.slices`` in a training run) does not import SimpleITK, which only reading and writing volumes need.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "CTVolume": "read",
    "CovsegInputError": "errors",
    "ImageGeometry": "read",
    "VolumeSource": "discover",
    "atomic_path": "atomic",
    "atomic_write_text": "atomic",
    "find_volumes": "discover",
    "read_volume": "read",
    "write_volume_like": "write",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    """Import ``name``'s submodule when the name is first asked for."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
