"""covseg.io: find, read and write CT volumes (see docs/io.md)."""

from covseg.io.atomic import atomic_path, atomic_write_text
from covseg.io.discover import VolumeSource, find_volumes
from covseg.io.errors import CovsegInputError
from covseg.io.read import CTVolume, ImageGeometry, read_volume
from covseg.io.write import write_volume_like

__all__ = [
    "CTVolume",
    "CovsegInputError",
    "ImageGeometry",
    "VolumeSource",
    "atomic_path",
    "atomic_write_text",
    "find_volumes",
    "read_volume",
    "write_volume_like",
]
