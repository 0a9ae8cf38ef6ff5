"""One lock per output folder, so that covseg runs sharing an ``--out`` folder never lose each other's results.

The lock is ``fcntl.flock`` on ``<out>/.covseg.lock``. It is held only for the short steps that read and
rewrite shared state: cleaning leftovers, claiming volume names, moving a finished volume folder into
place and merging ``summary.json`` / ``summary.csv``. So two runs into one folder proceed side by side and
both keep their volumes. The kernel drops the lock when its process dies (``kill -9`` included): a killed
run never leaves the folder locked. The lock file stays, and marks the folder as a covseg output folder
(:func:`covseg.io.discover.find_volumes` skips such folders, so an ``--out`` inside an input folder is not
read back as input).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from covseg.io.errors import CovsegInputError

__all__ = ["LOCK_NAME", "is_output_folder", "mark_output_folder", "output_lock"]

LOCK_NAME = ".covseg.lock"

_guard = threading.Lock()
_held: dict[Path, list] = {}  # resolved folder -> [threading.RLock, fd or None, depth]


def _forget_after_fork() -> None:
    """A forked child holds none of its parent's locks: drop its copies (its descriptors would pin them)."""
    global _guard
    for entry in _held.values():
        if entry[1] is not None:
            with contextlib.suppress(OSError):
                os.close(entry[1])
    _held.clear()
    _guard = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def is_output_folder(folder: str | Path) -> bool:
    """True when ``folder`` holds covseg's lock file (it is, or was, a covseg output folder)."""
    return (Path(folder) / LOCK_NAME).is_file()


def mark_output_folder(folder: str | Path) -> Path:
    """Create the lock file of ``folder`` if missing (marks it as an output folder); return its path."""
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666)
    except OSError as exc:
        raise CovsegInputError(folder, f"output folder is not writable ({exc.strerror})") from None
    os.close(fd)
    return path


@contextlib.contextmanager
def output_lock(folder: str | Path, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lock of output ``folder`` for the block (re-entrant within the process, across threads).

    ``on_wait(message)`` is called once if another process holds the lock and this one has to wait.
    """
    key = Path(folder).resolve()
    with _guard:
        entry = _held.setdefault(key, [threading.RLock(), None, 0])
    rlock = entry[0]
    with rlock:
        if entry[2] == 0:
            entry[1] = _flock(key, on_wait)
        entry[2] += 1
        try:
            yield
        finally:
            entry[2] -= 1
            if entry[2] == 0 and entry[1] is not None:
                os.close(entry[1])  # closing the descriptor releases the flock
                entry[1] = None


def _flock(folder: Path, on_wait: Callable[[str], None] | None) -> int:
    path = mark_output_folder(folder)
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if on_wait is not None:
            on_wait(f"{folder}: another covseg run is updating this output folder; waiting for it")
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        os.close(fd)
        raise
    return fd
