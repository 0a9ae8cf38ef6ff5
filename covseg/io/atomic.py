"""Atomic outputs: write to a hidden temporary name in the same folder, rename on success.

A failure (exception, Ctrl-C) inside the block deletes the temporary file, so no half-written output
is ever left under the final name. Temporary names start with ``.tmp-`` (hidden, skipped by
:func:`covseg.io.discover.find_volumes`) and keep the final name's suffix so writers that choose a
format from the extension (SimpleITK, nibabel) still do the right thing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from covseg.io.errors import CovsegInputError

__all__ = ["atomic_path", "atomic_write_text", "ensure_writable_dir"]


def ensure_writable_dir(directory: str | Path) -> Path:
    """Create ``directory`` (and parents) if needed; raise :class:`CovsegInputError` if impossible."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CovsegInputError(directory, "output folder is not writable (a file has that name)") from None
    except OSError as exc:
        raise CovsegInputError(directory, f"output folder is not writable ({_why(exc)})") from None
    return directory


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` if the block succeeds.

    The temporary file (e.g. ``.tmp-3f9a1c2b-infection_mask.nii.gz``) is created empty with the usual
    permissions, so the caller may overwrite it with any writer. On an exception it is deleted and the
    exception propagates; an existing file at ``path`` is replaced only on success.
    """
    path = Path(path)
    directory = ensure_writable_dir(path.parent if str(path.parent) else Path("."))
    tmp = _reserve(directory, path.name)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: nothing was written to the temporary file")
        _fsync(tmp)
        os.replace(tmp, path)
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


def _reserve(directory: Path, name: str) -> Path:
    for _ in range(100):
        tmp = directory / f".tmp-{secrets.token_hex(4)}-{name}"
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise CovsegInputError(directory, f"output folder is not writable ({_why(exc)})") from None
        os.close(fd)
        return tmp
    raise CovsegInputError(directory, "output folder is not writable (cannot create a temporary file)")


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _why(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__
