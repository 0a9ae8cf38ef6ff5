"""The inputs of the inference workflow: the checked folders, the volumes found, each read and lung-masked.

:class:`VolumeDataset` (the workflow's ``dataset``) holds the :class:`covseg.io.source.VolumeSource` list and
computes an item, :class:`VolumeItem`, with its ``transform`` (the workflow's ``preprocessing``,
:class:`VolumePreprocessing`: read + lung mask) when it is asked for, or ahead of time in a thread
(:meth:`VolumeDataset.prefetch`).

This module imports neither torch nor MONAI (numpy, scipy, SimpleITK, nibabel, pydicom only), and nothing that it
runs imports more: ``covseg infer`` starts reading and lung-masking its first volume here, in a forked child process
(:func:`fork_child`; a thread would take turns with the imports for the GIL), before the main thread imports torch
and MONAI to build the workflow from ``inference.yaml`` (the two overlap); the dataset built from the config then
takes that item over (:meth:`VolumeDataset.adopt`). MONAI must never be imported by two
threads at once (its package ``__init__`` imports its submodules in a cycle that another thread's import breaks).
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from covseg.engines.inference.handover import has_result, new_handover_folder, publish_result, read_result, write_result
from covseg.io.atomic import ensure_writable_dir
from covseg.io.discover import find_volumes
from covseg.io.errors import CovsegInputError
from covseg.io.read import CTVolume, read_volume
from covseg.io.source import VolumeSource
from covseg.transforms.lung import lung_mask

__all__ = ["VolumeDataset", "VolumeItem", "VolumePreprocessing", "check_folders", "fork_child"]


@dataclass
class VolumeItem:
    """One input ready for the network: the volume, its lung label map, and the seconds each step took."""

    volume: CTVolume
    lung: np.ndarray | None = None
    timing_s: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class VolumePreprocessing:
    """The inference workflow's ``preprocessing``: read a source and (``lung``) compute its lung mask.

    :func:`run_batch` calls it in its reader thread, so the next volume's reading and lung masking overlap the
    current volume's network pass.
    """

    lung: bool = True

    def __call__(self, source: VolumeSource | str | Path) -> VolumeItem:
        t0 = time.perf_counter()
        volume = read_volume(source)
        t1 = time.perf_counter()
        item = VolumeItem(volume, timing_s={"read": t1 - t0})
        if self.lung:
            item.lung = lung_mask(volume.array, volume.spacing)
            item.timing_s["lung_mask"] = time.perf_counter() - t1
        return item


class VolumeDataset(Sequence):
    """The inference workflow's ``dataset``: the volumes found in ``data`` (files, folders, DICOM series), each
    item being ``transform(source)`` (default :class:`VolumePreprocessing`), computed when it is asked for."""

    def __init__(self, data: Sequence[VolumeSource | str | Path] | str | Path,
                 transform: Callable[[VolumeSource], VolumeItem] | None = None) -> None:
        if isinstance(data, (str, Path)):
            data = [data]
        paths = [s for s in data if not isinstance(s, VolumeSource)]
        self.data: list[VolumeSource] = ([s for s in data if isinstance(s, VolumeSource)]
                                         + (find_volumes(paths) if paths else []))
        self.transform = transform if transform is not None else VolumePreprocessing()
        self._ahead: dict[int, Future] = {}

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> VolumeItem:  # type: ignore[override]
        ahead = self._ahead.pop(index, None)
        return ahead.result() if ahead is not None else self.transform(self.data[index])

    def prefetch(self, index: int = 0, process: bool = False) -> None:
        """Start computing item ``index`` now, in a background thread (e.g. while the model loads); the next
        ``dataset[index]`` returns that result. Not a daemon thread: a process that exits early (a usage error)
        waits for it, since killing a thread inside native reading code aborts the interpreter.

        ``process``: compute it in a forked child process instead (Linux; see :func:`fork_child`), so that it
        runs alongside this process's Python work (imports) rather than taking turns with it for the GIL: the
        lung mask is mostly scipy.ndimage, which holds the GIL. Call it from the main thread while no other thread
        is importing or holding locks (the CLI: before it imports torch). Where forking is not possible, or the
        child fails in any way, the item is computed in the thread as without ``process``."""
        if not 0 <= index < len(self.data) or index in self._ahead:
            return
        future: Future = Future()
        child = fork_child(self.transform, self.data[index]) if process else None

        def work() -> None:
            try:
                item = child.result() if child is not None else None
                future.set_result(item if item is not None else self.transform(self.data[index]))
            except BaseException as exc:  # noqa: BLE001 - delivered to whoever asks for the item
                future.set_exception(exc)

        self._ahead[index] = future
        threading.Thread(target=work, name="covseg-prefetch").start()

    def adopt(self, other: VolumeDataset) -> bool:
        """Take over the items ``other`` has under way or done (:meth:`prefetch`) when both datasets hold the same
        sources and equal transforms (else nothing is taken: the items are computed again); whether it took them."""
        if other is self or other.data != self.data or other.transform != self.transform:
            return False
        for index, future in other._ahead.items():
            self._ahead.setdefault(index, future)
        other._ahead.clear()
        return True


def check_folders(out_dir: str | Path, labels_dir: str | Path | None = None) -> Path:
    """Create/verify the output folder and that ``labels_dir`` exists; :class:`CovsegInputError` otherwise.

    :func:`run_batch` calls it first; callers may call it earlier (before loading a model) to fail fast.
    """
    if labels_dir is not None and not Path(labels_dir).is_dir():  # first: a usage error makes no output folder
        raise CovsegInputError(labels_dir, "labels folder not found")
    return ensure_writable_dir(out_dir)


class _Child:
    """A forked child computing one item; :meth:`result` waits for it and returns the item, or ``None`` when the
    child did not deliver one (any failure: the caller computes the item itself, which reproduces a real error)."""

    def __init__(self, pid: int, folder: Path) -> None:
        self.pid, self.folder = pid, folder

    def result(self) -> VolumeItem | None:
        try:
            _, status = os.waitpid(self.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0 or not has_result(self.folder):
                return None
            item = read_result(self.folder)
            return item if isinstance(item, VolumeItem) else None
        except Exception:  # noqa: BLE001 - the mechanism failed, not the item: computed again by the caller
            return None
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def fork_child(transform: Callable[[VolumeSource], VolumeItem], source: VolumeSource) -> _Child | None:
    """Fork a child that computes ``transform(source)`` and hands it back in a private folder on tmpfs (``/dev/shm``
    where it has room; :mod:`covseg.engines.inference.handover`: the arrays are mapped, not copied, by this process);
    ``None`` where forking is not possible (not Linux) or fails.

    The child runs only ``transform`` (which must import nothing: :class:`VolumePreprocessing` does not) and
    leaves with ``os._exit``: no atexit handlers, no flushing of buffers it shares with this process. An error
    in ``transform`` makes it exit non-zero without a result, and the caller computes the item again itself, so
    that the error it reports is the real one. It writes nothing once this process is gone."""
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return None
    try:
        folder = new_handover_folder()
    except OSError:
        return None
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    if pid == 0:  # the child
        code = 1
        try:
            write_result(transform(source), folder)
            if os.getppid() == parent:
                publish_result(folder)
                code = 0
            else:  # the parent is gone: nobody will read or remove it
                shutil.rmtree(folder, ignore_errors=True)
        except BaseException:  # noqa: BLE001, S110 - the parent computes the item itself
            pass
        finally:
            os._exit(code)
    return _Child(pid, folder)

