"""Atomic export of one volume: its output files written into a hidden folder that replaces ``<out>/<name>``.

:func:`export_volume` is the one place where a volume's outputs are written. Files go to
``<out>/.tmp-<pid>@<host>-<hex>-<name>/``, ``report.json`` last, and the folder is then renamed to ``<out>/<name>/``
(replacing this input's previous result), so a failure leaves no partial folder and a ``kill -9`` leaves
only a hidden folder that the next run removes (:func:`covseg.io.atomic.clean_leftovers`). The name is
checked under the output folder's lock just before the rename: a folder holding another input's result
is never replaced; this volume then goes to ``<name>_<tag>`` (:mod:`covseg.io.naming`). Which files are written,
and how: :mod:`covseg.engines.inference.outputs`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

from covseg.engines.inference.outputs import ExportOptions, VolumeOutputs, write_outputs
from covseg.io.atomic import atomic_write_text, ensure_writable_dir, leftover_name
from covseg.io.errors import CovsegInputError
from covseg.io.naming import pick_name
from covseg.io.outlock import output_lock

__all__ = ["export_volume", "replace_dir"]


def export_volume(item: VolumeOutputs, options: ExportOptions = ExportOptions()) -> Path:
    """Write ``item``'s outputs into a hidden folder, then rename it to ``item.final_dir``; return that folder."""
    t0 = time.perf_counter()
    parent = ensure_writable_dir(item.final_dir.parent, probe=False)
    with output_lock(parent):
        _settle_name(item)
    tmp = parent / leftover_name("tmp", item.final_dir.name)
    try:
        tmp.mkdir()
        files = write_outputs(tmp, item, options)
        files["report"] = "report.json"
        item.report.outputs = files
        now = time.perf_counter()
        item.report.timing_s["write"] = round(now - t0, 3)
        item.report.timing_s["total"] = round(now - item.started, 3)
        atomic_write_text(tmp / files["report"], item.report.to_json())
        with output_lock(parent):
            if _settle_name(item):  # another run took the name meanwhile
                atomic_write_text(tmp / files["report"], item.report.to_json())
            replace_dir(tmp, item.final_dir)
    except CovsegInputError as exc:  # name the file the user will look for, not its hidden temporary
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.path is None or str(tmp) not in exc.path:
            raise
        raise CovsegInputError(exc.path.replace(str(tmp), str(item.final_dir)), exc.reason) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return item.final_dir


def _settle_name(item: VolumeOutputs) -> bool:
    """Point ``item`` at a folder that is free or its own (call under the lock); True if the name changed."""
    key = item.key or str(item.volume.source_path.resolve())
    final = item.final_dir
    name = pick_name(final.parent, final.name, key, item.owners)
    if name == final.name:
        return False
    item.final_dir = final.parent / name
    item.report.name = name
    return True


def replace_dir(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an existing ``final`` (a previous run) is replaced."""
    old = None
    if final.exists() or final.is_symlink():
        if not final.is_dir() or final.is_symlink():
            raise CovsegInputError(final, "output exists and is not a folder")
        old = final.parent / leftover_name("old", final.name)
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old is not None:
            with contextlib.suppress(OSError):
                os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
