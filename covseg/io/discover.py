"""Find the CT volumes behind a list of input paths.

Each input is a file or a folder (searched recursively, hidden entries skipped). Recognised: NIfTI, MetaImage
and NRRD files by their suffix (:mod:`covseg.io.file_kinds`); DICOM files by their header
(:mod:`covseg.io.dicom_header`; non-image DICOM objects are skipped), grouped into one volume per series
(:mod:`covseg.io.dicom_series`). A DICOM localizer or colour file given by itself is refused.

Folders are searched through symbolic links too (a batch folder of links to series elsewhere), each real folder
once, so a link back up the tree ends the search there. Inside folders, every other file (``.json``, ``.txt``,
``.csv``, ``.md``, ``.png``, ``.raw`` …) is ignored.
A file given explicitly with an unknown extension is kept (kind ``"itk"``) and SimpleITK is tried on it
at read time, which fails with a clear message if it is not a readable 3D image.

**Errors never stop discovery.** A missing path, a folder with no volume, an unreadable folder or a
DICOM file whose header cannot be parsed becomes a :class:`VolumeSource` whose ``error`` is set;
:func:`covseg.io.read.read_volume` raises ``CovsegInputError("<path>: <error>")`` for it. So the caller
loops over ``find_volumes(paths)`` and handles every failure at one place, at read time.

Names are safe folder names, predictable and unique within one call (:mod:`covseg.io.source_names`). Inside an
input folder, covseg's own output folders (holding its lock file, :mod:`covseg.io.outlock`) and volume result
folders (``report.json`` + ``infection_mask.nii.gz``) are skipped, so an ``--out`` folder inside an input folder
is not read back as input.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from covseg.io.dicom_header import DicomInfo, NotDicom, Unreadable, dicom_info
from covseg.io.dicom_series import series_sources
from covseg.io.errors import first_line
from covseg.io.file_kinds import IMAGE_SUFFIXES, SKIP_SUFFIXES, Kind, image_suffix, special_file_kind
from covseg.io.outlock import is_output_folder
from covseg.io.source import VolumeSource
from covseg.io.source_names import file_stem, make_unique, relative_name, safe_name

__all__ = ["find_volumes"]


def find_volumes(paths: Sequence[str | Path] | str | Path) -> list[VolumeSource]:
    """Return one :class:`VolumeSource` per volume found in ``paths`` (files or folders), in order.

    Never raises for a bad input: problems become sources with ``error`` set (see module docstring).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    sources: list[VolumeSource] = []
    seen: set[Path] = set()
    explicit_dicom: list[tuple[Path, DicomInfo]] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists() and not path.is_symlink():
            sources.append(_error_source(path, file_stem(path), "does not exist"))
        elif path.is_dir():
            sources.extend(_scan_folder(path, seen))
        elif (kind := special_file_kind(path)) is not None:  # never opened: a FIFO would block forever
            sources.append(_error_source(path, file_stem(path), f"is not a regular file ({kind}); give the image "
                                                            "file itself"))
        else:
            key = _key(path)
            if key in seen:
                continue
            seen.add(key)
            src = _explicit_file(path)
            if isinstance(src, DicomInfo):
                explicit_dicom.append((path, src))
            else:
                sources.append(src)
    if explicit_dicom:
        sources.extend(series_sources(explicit_dicom, root=None))
    make_unique(sources)
    return sources


def _scan_folder(root: Path, seen: set[Path]) -> list[VolumeSource]:
    found: list[VolumeSource] = []
    dicoms: list[tuple[Path, DicomInfo]] = []
    problems: list[VolumeSource] = []
    given_before = 0  # volume files already in the batch (the folder given twice, or a file of it given too)
    unreadable: list[Path] = []  # DICOM files whose header cannot be read: they may be slices of a series here

    def onerror(exc: OSError) -> None:
        where = Path(exc.filename) if exc.filename else root
        reason = f"folder cannot be read ({exc.strerror})"
        problems.append(_error_source(where, relative_name(where, root), reason))

    visited = {_key(root)}  # real folders searched: a symlinked folder is searched once, a link cycle ends
    for folder, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=True):
        dirnames[:] = [d for d in sorted(dirnames) if not d.startswith(".")  # in order: the first link wins
                       and not _is_covseg_output(Path(folder) / d) and _first_visit(Path(folder) / d, visited)]
        for fname in sorted(filenames):
            if fname.startswith("."):
                continue
            path = Path(folder) / fname
            suffix = image_suffix(path)
            if suffix in IMAGE_SUFFIXES:
                key = _key(path)
                if key in seen:
                    given_before += 1
                    continue
                seen.add(key)
                name = relative_name(path.parent, root, path.name[: -len(suffix)])
                found.append(VolumeSource(name=name, path=path, kind=IMAGE_SUFFIXES[suffix]))
                continue
            if path.suffix.lower() in SKIP_SUFFIXES or not path.is_file():
                continue
            try:
                info = dicom_info(path)
            except Unreadable as exc:  # an extension-less DICOM slice, perhaps: never dropped without a word
                problems.append(_error_source(path, relative_name(path.parent, root, path.name),
                                              f"cannot be read ({exc})", "dicom"))
                unreadable.append(path)
                continue
            except NotDicom:
                continue
            except Exception as exc:  # a DICOM file whose header is broken: report, go on
                problems.append(_error_source(path, relative_name(path.parent, root, path.name),
                                              f"DICOM header cannot be read ({_exc_text(exc)})", "dicom"))
                unreadable.append(path)
                continue
            if info is None:  # DICOM without pixels (DICOMDIR, report, …)
                continue
            key = _key(path)
            if key in seen:
                given_before += 1
                continue
            seen.add(key)
            dicoms.append((path, info))
    left_out: list[Path] = []
    found.extend(series_sources(dicoms, root, left_out))
    _warn_of_unreadable_neighbours(found, unreadable)
    found.sort(key=lambda s: (str(s.path), s.name))
    if not found and not problems and not given_before:
        only = (f" (only {len(left_out)} DICOM localizer or colour image(s), which are left out)" if left_out
                else "")
        problems.append(_error_source(
            root, safe_name(root.resolve().name),
            f"no CT volume found in folder{only} (looked for NIfTI, MHA/MHD, NRRD and DICOM files)", "dicom"))
    return found + problems


def _warn_of_unreadable_neighbours(found: list[VolumeSource], unreadable: list[Path]) -> None:
    """A series beside DICOM files that cannot be read may lack them: a broken end slice leaves a regular, shorter
    series that would read without a word (its own error line alone does not say which volume it shortens)."""
    for src in found:
        if src.kind != "dicom" or src.error:
            continue
        folders = {f.parent for f in src.files}
        near = [p for p in unreadable if p.parent in folders]
        if near:
            src.unreadable_beside = near
            src.warnings.append(f"{len(near)} DICOM file(s) beside this series could not be read (e.g. {near[0].name}):"
                                " if they are slices of it, the volume lacks them")


def _first_visit(folder: Path, visited: set[Path]) -> bool:
    """Whether ``folder``'s real folder is searched for the first time (and note it): a folder reached through a
    symbolic link (a series linked into a batch folder) is searched like any other, but never twice."""
    real = _key(folder)
    if real in visited:
        return False
    visited.add(real)
    return True


def _is_covseg_output(folder: Path) -> bool:
    """A covseg output folder (its lock file) or one volume's result folder (report.json + infection mask).

    A folder that cannot be searched (no permission) is not one: the walk then reports it as a problem of its own
    ("folder cannot be read") and goes on, where the PermissionError of ``is_file`` stopped the whole batch."""
    try:
        return is_output_folder(folder) or ((folder / "report.json").is_file()
                                            and (folder / "infection_mask.nii.gz").is_file())
    except OSError:
        return False


def _explicit_file(path: Path) -> VolumeSource | DicomInfo:
    suffix = image_suffix(path)
    if suffix in IMAGE_SUFFIXES:
        return VolumeSource(name=safe_name(path.name[: -len(suffix)]), path=path, kind=IMAGE_SUFFIXES[suffix])
    try:
        info = dicom_info(path)
    except NotDicom:
        return VolumeSource(name=file_stem(path), path=path, kind="itk")  # SimpleITK will say what it is
    except Exception as exc:
        return _error_source(path, file_stem(path), f"DICOM header cannot be read ({_exc_text(exc)})", "dicom")
    if info is None:
        return _error_source(path, file_stem(path), "DICOM object without an image (DICOMDIR, report, "
                                                "segmentation …)", "dicom")
    if info.not_slice:
        return _error_source(path, file_stem(path), info.not_slice, "dicom")
    return info


def _error_source(path: Path, name: str, error: str, kind: Kind | None = None) -> VolumeSource:
    if kind is None:
        kind = IMAGE_SUFFIXES.get(image_suffix(path), "itk")
    return VolumeSource(name=safe_name(name), path=path, kind=kind, error=error)


def _key(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()


def _exc_text(exc: BaseException) -> str:
    return first_line(str(exc)) or exc.__class__.__name__
