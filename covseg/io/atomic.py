"""Atomic outputs: write to a hidden temporary name in the same folder, rename on success.

A failure (exception, Ctrl-C) inside the block deletes the temporary file, so no half-written output
is ever left under the final name. Temporary names are ``.tmp-<pid>@<host>-<hex>-<name>`` (hidden, skipped by
:func:`covseg.io.discover.find_volumes`) and keep the final name's suffix so writers that choose a
format from the extension (SimpleITK, nibabel) still do the right thing. A folder being replaced is first
moved aside as ``.old-<pid>@<host>-<hex>-<name>``.

The writer's pid in those names lets a later run tell the leftovers of a killed run (``kill -9``, power
loss: nothing could clean up) from a live run's work in progress: :func:`clean_leftovers` removes a
leftover only when its owner process no longer exists (one written on another host only when it is over
an hour old), and moves an ``.old-*`` folder back when the run died between moving the previous result
aside and putting the new one in place.

A write that fails for lack of space or permission raises a one-line :class:`CovsegInputError`.
:func:`check_nifti_written` (used by :func:`covseg.io.write.write_volume_like`) checks a NIfTI file's length
against its header after writing: SimpleITK's NIfTI writer reports a full disk only on stderr and leaves a
truncated file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from covseg.io.errors import CovsegInputError

__all__ = [
    "atomic_path",
    "atomic_write_text",
    "check_nifti_written",
    "clean_leftovers",
    "ensure_writable_dir",
    "leftover_name",
    "pid_alive",
]

_LEFTOVER = re.compile(r"^\.(tmp|old)-(\d+)(?:@([0-9a-f]{6}))?-[0-9a-f]{8}-(.+)$")
_LEGACY = re.compile(r"^\.(tmp|old)-[0-9a-f]{8}-(.+)$")  # covseg before the pid was in the name
_LEGACY_AGE_S = 3600.0  # leftovers whose pid cannot be checked (legacy, other host): removed only when this old
_HOST = hashlib.sha1(socket.gethostname().encode("utf-8")).hexdigest()[:6]
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO}


def ensure_writable_dir(directory: str | Path, probe: bool = True) -> Path:
    """Create ``directory`` (and parents) if needed; raise :class:`CovsegInputError` if it cannot be written.

    With ``probe`` an empty file is created and removed in it: an existing read-only folder is refused here,
    up front, instead of on every file later (``os.access`` would say yes to root without CAP_DAC_OVERRIDE).
    """
    directory = Path(directory)
    _mkdir(directory)
    if probe:
        tmp = _reserve(directory, "probe")
        with contextlib.suppress(OSError):
            tmp.unlink()
    return directory


def leftover_name(kind: str, name: str) -> str:
    """A hidden name ``.<kind>-<pid>@<host>-<8 hex>-<name>`` (``kind`` ``tmp`` or ``old``) owned by this process.

    ``<host>`` is 6 hex digits of the host name's SHA-1: a pid means something only on its own machine (an
    output folder on a network share, or shared by containers, is seen by several).
    """
    return f".{kind}-{os.getpid()}@{_HOST}-{secrets.token_hex(4)}-{name}"


@contextlib.contextmanager
def atomic_path(path: str | Path, verify: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` if the block succeeds.

    The temporary file (e.g. ``.tmp-4242-3f9a1c2b-infection_mask.nii.gz``) is created empty with the usual
    permissions, so the caller may overwrite it with any writer. On an exception it is deleted and the
    exception propagates (a full disk or a permission error as :class:`CovsegInputError`); an existing file
    at ``path`` is replaced only on success. ``verify(tmp)`` (e.g. :func:`check_nifti_written`) may raise
    :class:`CovsegInputError` to refuse what was written.
    """
    path = Path(path)
    directory = _mkdir(path.parent if str(path.parent) else Path("."))
    tmp = _reserve(directory, path.name)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: nothing was written to the temporary file")
        if verify is not None:
            try:
                verify(tmp)
            except CovsegInputError as exc:
                raise CovsegInputError(path, exc.reason) from None
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if exc.errno in _WRITE_ERRNOS:
            raise CovsegInputError(path, f"cannot be written ({_why(exc)})") from None
        if exc.errno == errno.EISDIR:  # the rename onto a folder: name the target, not the temporary
            raise CovsegInputError(path, "cannot be written (a folder has that name)") from None
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; return ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return path


def check_nifti_written(tmp: Path) -> None:
    """Raise :class:`CovsegInputError` if the NIfTI file ``tmp`` is shorter than its header says.

    ``.nii``: the file size; ``.nii.gz``: the gzip trailer's length field (uncompressed size mod 2**32), which a
    truncated stream does not end with. Other suffixes: nothing to check.
    """
    name = tmp.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return
    import nibabel as nib
    import numpy as np

    try:
        proxy = nib.load(str(tmp)).dataobj
        expected = int(proxy.offset) + int(np.prod(proxy.shape)) * np.dtype(proxy.dtype).itemsize
        if name.endswith(".nii"):
            complete = tmp.stat().st_size >= expected
        else:
            with open(tmp, "rb") as fh:
                fh.seek(-4, os.SEEK_END)
                complete = int.from_bytes(fh.read(4), "little") == expected % (1 << 32)
    except Exception:  # noqa: BLE001 - an unreadable header is an incomplete file too
        complete = False
    if not complete:
        raise CovsegInputError(tmp, f"cannot be written ({_space_hint(tmp.parent)}the file came out incomplete)")


def clean_leftovers(directory: str | Path, depth: int = 1) -> list[str]:
    """Remove the ``.tmp-*`` / ``.old-*`` leftovers of dead runs in ``directory`` (and ``depth`` levels below).

    A leftover whose owner pid is alive (another run at work) is never touched. An ``.old-*`` folder whose
    final name is missing (the run died between the two renames) is moved back, so a finished result is
    never lost. Returns one line per action, for a log.
    """
    directory = Path(directory)
    done: list[str] = []
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return done
    for entry in entries:
        m = _LEFTOVER.match(entry.name)
        legacy = None if m else _LEGACY.match(entry.name)
        path = Path(entry.path)
        if m and m.group(3) in (None, _HOST):
            kind, name, dead = m.group(1), m.group(4), not pid_alive(int(m.group(2)))
        elif m:  # another host's: its pid cannot be checked from here; temporaries live seconds, not hours
            kind, name, dead = m.group(1), m.group(4), _age_s(path) > _LEGACY_AGE_S
        elif legacy:
            kind, name, dead = legacy.group(1), legacy.group(2), _age_s(path) > _LEGACY_AGE_S
        else:
            if depth > 0 and entry.is_dir(follow_symlinks=False):
                done += clean_leftovers(path, depth - 1)
            continue
        if not dead:
            continue
        final = directory / name
        try:
            if kind == "old" and not (final.exists() or final.is_symlink()):
                os.replace(path, final)
                done.append(f"restored {final} (a killed run had moved it aside)")
            elif entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
                done.append(f"removed {path} (left by a killed run)")
            else:
                path.unlink()
                done.append(f"removed {path} (left by a killed run)")
        except OSError:
            continue
    return done


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (on this machine)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


def _mkdir(directory: Path) -> Path:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CovsegInputError(directory, "output folder is not writable (a file has that name)") from None
    except OSError as exc:
        raise CovsegInputError(directory, f"output folder is not writable ({_why(exc)})") from None
    if not directory.is_dir():
        raise CovsegInputError(directory, "output folder is not writable (a file has that name)")
    return directory


def _reserve(directory: Path, name: str) -> Path:
    for _ in range(100):
        tmp = directory / leftover_name("tmp", name)
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise CovsegInputError(directory, f"output folder is not writable ({_why(exc)})") from None
        os.close(fd)
        return tmp
    raise CovsegInputError(directory, "output folder is not writable (cannot create a temporary file)")


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.lstat().st_mtime
    except OSError:
        return 0.0


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _space_hint(directory: Path) -> str:
    with contextlib.suppress(OSError):
        st = os.statvfs(directory)
        if st.f_bavail * st.f_frsize < (1 << 20):
            return "no space left on device: "
    return ""


def _why(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__
