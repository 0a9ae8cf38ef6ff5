"""Hand a result from a forked child to its parent through a private folder (on tmpfs where there is one).

The result is pickled with protocol 5, and each large buffer (a numpy array's data, ``OUT_OF_BAND_BYTES`` and up)
goes out of band into a file of its own. The parent maps those files copy-on-write instead of reading them into
new memory: its arrays are views of the pages the child wrote, so handing over a 512x512x300 CT and its lung mask
costs one copy (the child's write), not two. The parent may write to the arrays; only the pages it writes are
copied. The folder can be removed as soon as :func:`read_result` returns: the mappings keep their pages.

:func:`new_handover_folder` makes the folder, named by the parent's pid, on ``/dev/shm`` where it has room, and first
removes the folders of parents that are gone.
"""

from __future__ import annotations

import mmap
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

from covseg.io.atomic import pid_alive

__all__ = ["HANDOVER_PREFIX", "OUT_OF_BAND_BYTES", "clean_dead_handovers", "handover_dir", "has_result",
           "new_handover_folder", "publish_result", "read_result", "write_result"]

OUT_OF_BAND_BYTES = 1 << 20
RESULT = "result.pickle"
HANDOVER_PREFIX = "covseg-item-"  # + the parent's pid: whose hand-over folder it is
SHM_ROOM = 2 << 30  # bytes free on /dev/shm for a hand-over (a 512x512x600 CT and its lung mask: 0.8 GB)


def new_handover_folder() -> Path:
    """A new private folder for a hand-over to this process (:func:`handover_dir`), once the folders of dead
    parents there are removed; ``OSError`` when none can be made."""
    where = handover_dir()
    clean_dead_handovers(Path(where or tempfile.gettempdir()))
    return Path(tempfile.mkdtemp(prefix=f"{HANDOVER_PREFIX}{os.getpid()}-", dir=where))


def handover_dir(shm: Path = Path("/dev/shm"), room: int = SHM_ROOM) -> str | None:
    """``/dev/shm`` when it is writable and has ``room`` bytes free (a container's is often 64 MB, too small for a
    CT: the child would fail and the item be computed again), else ``None``: the system's temporary folder."""
    try:
        usage = os.statvfs(shm)
    except OSError:
        return None
    return str(shm) if os.access(shm, os.W_OK) and usage.f_bavail * usage.f_frsize >= room else None


def clean_dead_handovers(folder: Path) -> None:
    """Remove the hand-over folders in ``folder`` whose parent is gone (killed after its child finished, the
    folder would hold a CT in memory until the next reboot); a live parent's, or an unreadable name, is left alone."""
    try:
        entries = list(folder.glob(f"{HANDOVER_PREFIX}*-*"))
    except OSError:
        return
    for entry in entries:
        pid = entry.name[len(HANDOVER_PREFIX):].partition("-")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


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
