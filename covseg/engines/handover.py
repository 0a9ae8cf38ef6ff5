"""Hand a result from a forked child to its parent through a private folder (on tmpfs where there is one).

The result is pickled with protocol 5, and each large buffer (a numpy array's data, ``OUT_OF_BAND_BYTES`` and up)
goes out of band into a file of its own. The parent maps those files copy-on-write instead of reading them into
new memory: its arrays are views of the pages the child wrote, so handing over a 512x512x300 CT and its lung mask
costs one copy (the child's write), not two. The parent may write to the arrays; only the pages it writes are
copied. The folder can be removed as soon as :func:`read_result` returns: the mappings keep their pages.
"""

from __future__ import annotations

import mmap
import os
import pickle
from pathlib import Path
from typing import Any

__all__ = ["OUT_OF_BAND_BYTES", "has_result", "publish_result", "read_result", "write_result"]

OUT_OF_BAND_BYTES = 1 << 20
RESULT = "result.pickle"


def write_result(result: Any, folder: Path) -> None:
    """Write ``result`` into ``folder``: the pickle as a part file, and its large buffers as ``buffer-<i>`` files;
    :func:`publish_result` then renames the part into place, so that a reader sees the whole result or none."""
    buffers: list[pickle.PickleBuffer] = []

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        """False (out of band) for a large buffer, which is kept for a file of its own; True keeps it in band."""
        if buffer.raw().nbytes < OUT_OF_BAND_BYTES:
            return True
        buffers.append(buffer)
        return False

    part = folder / f"{RESULT}.part"
    with open(part, "wb") as fh:
        pickle.dump(result, fh, protocol=5, buffer_callback=out_of_band)
    for index, buffer in enumerate(buffers):
        with open(folder / f"buffer-{index}", "wb") as fh:
            fh.write(buffer.raw())


def publish_result(folder: Path) -> None:
    """Make the result written into ``folder`` visible to :func:`has_result` and :func:`read_result`."""
    os.replace(folder / f"{RESULT}.part", folder / RESULT)


def has_result(folder: Path) -> bool:
    """Whether ``folder`` holds a published result."""
    return (folder / RESULT).is_file()


def read_result(folder: Path) -> Any:
    """The result :func:`write_result` published in ``folder``, its large buffers mapped copy-on-write."""
    buffers = []
    while (path := folder / f"buffer-{len(buffers)}").is_file():
        with open(path, "rb") as fh:
            buffers.append(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY))
    with open(folder / RESULT, "rb") as fh:
        return pickle.load(fh, buffers=buffers)
