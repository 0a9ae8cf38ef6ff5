"""covseg.io: find, read and write CT volumes (see docs/io.md).

The names below are loaded on first use (PEP 562), so that importing one submodule (say ``covseg.io.atomic`` or
``covseg.io.slices`` in a training run) does not import SimpleITK, which only reading and writing volumes need.
"""

from __future__ import annotations

from covseg.lazy import lazy_names

_HOMES = {
    **dict.fromkeys(("CTVolume", "ImageGeometry", "read_volume"), "read"),
    "VolumeSource": "source",
    "find_volumes": "discover",
    **dict.fromkeys(("atomic_path", "atomic_write_text"), "atomic"),
    "CovsegInputError": "errors",
    "write_volume_like": "write",
}

__all__ = sorted(_HOMES)
__getattr__ = lazy_names(__name__, _HOMES)
