"""Find the CT volumes behind a list of input paths.

Each input is a file or a folder (searched recursively, hidden entries skipped). Recognised:

* NIfTI (``.nii``, ``.nii.gz``) -> kind ``"nifti"``; MetaImage (``.mha``, ``.mhd``) and NRRD (``.nrrd``,
  ``.nhdr``) -> kind ``"itk"``;
* DICOM files, with or without a ``.dcm`` extension, recognised by the ``DICM`` preamble (or, for old
  preamble-less files, by pydicom reading an image header). Non-image DICOM objects (DICOMDIR,
  reports, segmentations, RT objects) are skipped. Within one input they are grouped by
  ``SeriesInstanceUID`` (files with an empty UID: by folder, image size and orientation), so a folder
  holding two series gives two volumes. A file repeating an instance already in its series (same
  ``SOPInstanceUID``: a copy, e.g. the same series exported twice) is left out, with a warning. A series made
  only of localizer (scout) images (``ImageType`` LOCALIZER) or of colour images (screen captures such as dose
  reports), which a CT study carries beside its axial series, is left out; such a file given by itself is refused.

Folders are searched through symbolic links too (a batch folder of links to series elsewhere), each real folder
once, so a link back up the tree ends the search there. Inside folders, every other file (``.json``, ``.txt``,
``.csv``, ``.md``, ``.png``, ``.raw`` …) is ignored.
A file given explicitly with an unknown extension is kept (kind ``"itk"``) and SimpleITK is tried on it
at read time, which fails with a clear message if it is not a readable 3D image.

**Errors never stop discovery.** A missing path, a folder with no volume, an unreadable folder or a
DICOM file whose header cannot be parsed becomes a :class:`VolumeSource` whose ``error`` is set;
:func:`covseg.io.read.read_volume` raises ``CovsegInputError("<path>: <error>")`` for it. So the caller
loops over ``find_volumes(paths)`` and handles every failure at one place, at read time.

Names are safe folder names (``[A-Za-z0-9._-]``), predictable and unique within one call:

* a file: its path relative to the input folder without the image suffix, ``/`` -> ``_``
  (``case1/ct.nii.gz`` -> ``case1_ct``); a file given explicitly: its stem (``ct``);
* a DICOM series: its folder relative to the input folder, or the folder's own name when the input is
  the series folder (``dicom``); when one folder holds several series: ``<folder>_<SeriesNumber>``
  (or ``_<last 8 UID digits>`` when series numbers are missing or repeated);
* remaining duplicates (``siteA/ct.nii.gz`` and ``siteB/ct.nii.gz`` given explicitly) get ``_<8 hex>``, a tag
  computed from the input's resolved path (:mod:`covseg.io.naming`), so the name does not depend on the
  order or the other inputs;
* inside an input folder, covseg's own output folders (holding its lock file, :mod:`covseg.io.outlock`) and
  volume result folders (``report.json`` + ``infection_mask.nii.gz``) are skipped, so an ``--out`` folder
  inside an input folder is not read back as input.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from covseg.io.naming import name_tag, source_key
from covseg.io.outlock import is_output_folder

__all__ = ["VolumeSource", "find_volumes", "image_suffix", "safe_name", "special_file_kind"]

Kind = Literal["nifti", "dicom", "itk"]

IMAGE_SUFFIXES: dict[str, Kind] = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".mha": "itk",
    ".mhd": "itk",
    ".nrrd": "itk",
    ".nhdr": "itk",
}
# Never DICOM and never a volume by themselves: skipped inside folders without opening them.
_SKIP_SUFFIXES = {
    ".json", ".txt", ".csv", ".tsv", ".md", ".rst", ".html", ".xml", ".yaml", ".yml", ".log", ".py",
    ".ipynb", ".pdf", ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".raw", ".zraw", ".img",
    ".hdr", ".npy", ".npz", ".pt", ".pth", ".pkl", ".zip", ".tar", ".gz", ".bz2", ".xz", ".7z", ".ini",
    ".cfg", ".toml", ".sh", ".bat", ".exe", ".dll", ".so",
}
_DICOM_TAGS = [
    "SOPClassUID", "SOPInstanceUID", "ImageType", "Modality", "SeriesInstanceUID", "SeriesNumber", "Rows",
    "Columns", "ImageOrientationPatient", "SamplesPerPixel",
]
_LOCALIZER = "DICOM localizer (scout / topogram) image, not a slice of a CT volume"
_COLOUR = "DICOM colour image (a screen capture such as a dose report?), not a slice of a CT volume"


@dataclass
class VolumeSource:
    """One volume to read: a NIfTI/ITK file or one DICOM series.

    ``path`` is the file, or for DICOM the folder holding the series (common parent of ``files``).
    ``files`` lists the DICOM files (empty for other kinds). ``error`` is set when discovery already
    knows the source cannot be read; ``warnings`` are carried over to the :class:`CTVolume`.
    """

    name: str
    path: Path
    kind: Kind
    files: list[Path] = field(default_factory=list)
    series_uid: str | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    unreadable_beside: list[Path] = field(default_factory=list)
    """DICOM files in the series' folders whose header cannot be read: perhaps slices of it (see the reader's
    missing-slice error, which names them)."""


def find_volumes(paths: Sequence[str | Path] | str | Path) -> list[VolumeSource]:
    """Return one :class:`VolumeSource` per volume found in ``paths`` (files or folders), in order.

    Never raises for a bad input: problems become sources with ``error`` set (see module docstring).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    sources: list[VolumeSource] = []
    seen: set[Path] = set()
    explicit_dicom: list[tuple[Path, _DicomInfo]] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists() and not path.is_symlink():
            sources.append(_error_source(path, _stem(path), "does not exist"))
        elif path.is_dir():
            sources.extend(_scan_folder(path, seen))
        elif (kind := special_file_kind(path)) is not None:  # never opened: a FIFO would block forever
            sources.append(_error_source(path, _stem(path), f"is not a regular file ({kind}); give the image "
                                                            "file itself"))
        else:
            key = _key(path)
            if key in seen:
                continue
            seen.add(key)
            src = _explicit_file(path)
            if isinstance(src, _DicomInfo):
                explicit_dicom.append((path, src))
            else:
                sources.append(src)
    if explicit_dicom:
        sources.extend(_series_sources(explicit_dicom, root=None))
    _make_unique(sources)
    return sources


# ---------------------------------------------------------------------------------------------------
@dataclass
class _DicomInfo:
    series_uid: str
    series_number: str
    group: tuple
    instance_uid: str = ""
    not_slice: str = ""
    """Why the image is no CT slice (:data:`_LOCALIZER`, :data:`_COLOUR`), else empty. A series made only of such
    images (a study's scouts, its dose-report capture) is left out of a folder; one such file among CT slices
    stays in its series, whose reading then refuses it (a damaged slice must not vanish)."""


def _scan_folder(root: Path, seen: set[Path]) -> list[VolumeSource]:
    found: list[VolumeSource] = []
    dicoms: list[tuple[Path, _DicomInfo]] = []
    problems: list[VolumeSource] = []
    given_before = 0  # volume files already in the batch (the folder given twice, or a file of it given too)
    unreadable: list[Path] = []  # DICOM files whose header cannot be read: they may be slices of a series here

    def onerror(exc: OSError) -> None:
        where = Path(exc.filename) if exc.filename else root
        reason = f"folder cannot be read ({exc.strerror})"
        problems.append(_error_source(where, _rel_name(where, root), reason))

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
                name = _rel_name(path.parent, root, path.name[: -len(suffix)])
                found.append(VolumeSource(name=name, path=path, kind=IMAGE_SUFFIXES[suffix]))
                continue
            if path.suffix.lower() in _SKIP_SUFFIXES or not path.is_file():
                continue
            try:
                info = _dicom_info(path, sniffed=True)
            except _Unreadable as exc:  # an extension-less DICOM slice, perhaps: never dropped without a word
                problems.append(_error_source(path, _rel_name(path.parent, root, path.name),
                                              f"cannot be read ({exc})", "dicom"))
                unreadable.append(path)
                continue
            except _NotDicom:
                continue
            except Exception as exc:  # a DICOM file whose header is broken: report, go on
                problems.append(_error_source(path, _rel_name(path.parent, root, path.name),
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
    found.extend(_series_sources(dicoms, root, left_out))
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


def _explicit_file(path: Path) -> VolumeSource | _DicomInfo:
    suffix = image_suffix(path)
    if suffix in IMAGE_SUFFIXES:
        return VolumeSource(name=safe_name(path.name[: -len(suffix)]), path=path, kind=IMAGE_SUFFIXES[suffix])
    try:
        info = _dicom_info(path, sniffed=True)
    except _NotDicom:
        return VolumeSource(name=_stem(path), path=path, kind="itk")  # SimpleITK will say what it is
    except Exception as exc:
        return _error_source(path, _stem(path), f"DICOM header cannot be read ({_exc_text(exc)})", "dicom")
    if info is None:
        return _error_source(path, _stem(path), "DICOM object without an image (DICOMDIR, report, "
                                                "segmentation …)", "dicom")
    if info.not_slice:
        return _error_source(path, _stem(path), info.not_slice, "dicom")
    return info


def _series_sources(dicoms: list[tuple[Path, _DicomInfo]], root: Path | None,
                    left_out: list[Path] | None = None) -> list[VolumeSource]:
    """One source per series; a series of localizer or colour images only goes to ``left_out`` instead."""
    groups: dict[tuple, list[tuple[Path, _DicomInfo]]] = {}
    repeats: dict[tuple, list[Path]] = {}
    instances: set[tuple[tuple, str]] = set()
    for path, info in sorted(dicoms, key=lambda d: d[0]):
        if info.instance_uid and (info.group, info.instance_uid) in instances:  # a copy of an instance: no new data
            repeats.setdefault(info.group, []).append(path)
            continue
        instances.add((info.group, info.instance_uid))
        groups.setdefault(info.group, []).append((path, info))
    for group, members in list(groups.items()):
        if all(info.not_slice for _, info in members):
            del groups[group]
            if left_out is not None:
                left_out.extend(p for p, _ in members)
    # name every group after its folder; folders holding several series get a per-series suffix
    by_folder: dict[str, list[tuple[Path, list[tuple[Path, _DicomInfo]]]]] = {}
    for members in groups.values():
        files = sorted(p for p, _ in members)
        folder = Path(os.path.commonpath([str(p.parent) for p in files]))
        base = _rel_name(folder, root) if root is not None else safe_name(folder.resolve().name)
        by_folder.setdefault(base, []).append((folder, members))
    out: list[VolumeSource] = []
    for base, entries in by_folder.items():
        numbers = [m[0][1].series_number for _, m in entries]
        use_numbers = all(numbers) and len(set(numbers)) == len(numbers)
        entries.sort(key=lambda e: (_num_key(e[1][0][1].series_number), e[1][0][1].series_uid))
        for index, (folder, members) in enumerate(entries, start=1):
            info = members[0][1]
            name = base
            if len(entries) > 1:
                if use_numbers:
                    tag = info.series_number
                elif info.series_uid:
                    tag = re.sub(r"\D", "", info.series_uid)[-8:] or str(index)
                else:
                    tag = str(index)
                name = safe_name(f"{base}_{tag}")
            warnings = []
            copies = repeats.get(info.group, [])
            if copies:
                warnings.append(f"{len(copies)} DICOM file(s) repeat instances of this series (same "
                                f"SOPInstanceUID) and were left out, e.g. {copies[0]}")
            if not info.series_uid:
                warnings.append("DICOM files have no SeriesInstanceUID; grouped by folder, image size "
                                "and orientation")
            out.append(VolumeSource(name=name, path=folder, kind="dicom",
                                    files=sorted(p for p, _ in members),
                                    series_uid=info.series_uid or None, warnings=warnings))
    out.sort(key=lambda s: (str(s.path), s.name))
    return out


class _NotDicom(Exception):
    pass


class _Unreadable(_NotDicom):
    """The file cannot be opened (no read permission, …): whether it is DICOM cannot be told. A caller that only
    looks for DICOM treats it as not DICOM; a folder scan reports it (it may be a slice of a series there)."""


def _dicom_info(path: Path, sniffed: bool) -> _DicomInfo | None:
    """Header summary of a DICOM file, ``None`` for DICOM without an image; raises _NotDicom."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise _Unreadable(exc.strerror or type(exc).__name__) from exc
    force = False
    if head[128:132] != b"DICM":
        # old preamble-less files start with a group 0002 or 0008 tag (little endian)
        if head[:2] not in (b"\x02\x00", b"\x08\x00") or len(head) < 8:
            raise _NotDicom
        force = True
    import pydicom.uid  # here, not at the top: a NIfTI input never needs pydicom (a fast start)

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_DICOM_TAGS, force=force)
    except Exception:
        if force:
            raise _NotDicom from None
        raise
    if "Rows" not in ds or "Columns" not in ds:
        if force:
            raise _NotDicom
        sop = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", "") or "")
        sop_name = pydicom.uid.UID(sop).name if sop else ""
        if sop_name and sop_name != sop and "Image" not in sop_name:
            return None  # DICOMDIR, report, structure set, …: not an image
        raise ValueError("no image header (Rows/Columns missing): incomplete or corrupt file?")
    sop = str(ds.get("SOPClassUID", "") or "")
    sop_name = pydicom.uid.UID(sop).name if sop else ""
    if sop_name and sop_name != sop and "Image" not in sop_name:
        return None  # segmentation, RT dose, …: has pixels but is not an image to segment
    image_type = ds.get("ImageType") or []
    values = [image_type] if isinstance(image_type, str) else list(image_type)
    not_slice = (_LOCALIZER if "LOCALIZER" in (str(v).strip().upper() for v in values)
                 else _COLOUR if int(ds.get("SamplesPerPixel", 1) or 1) != 1 else "")
    uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
    number = str(ds.get("SeriesNumber", "") or "").strip()
    if uid:
        group: tuple = ("uid", uid)
    else:
        iop = tuple(round(float(v), 4) for v in (ds.get("ImageOrientationPatient") or ()))
        group = ("nouid", str(path.parent), int(ds.Rows), int(ds.Columns), iop)
    instance = str(ds.get("SOPInstanceUID", "") or "").strip()
    return _DicomInfo(series_uid=uid, series_number=number, group=group, instance_uid=instance,
                      not_slice=not_slice)


# ---------------------------------------------------------------------------------------------------
def image_suffix(path: str | Path) -> str:
    """The image suffix of ``path`` in lower case (``.nii.gz`` counts as one), or its last suffix."""
    name = Path(path).name.lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    return Path(name).suffix


def special_file_kind(path: str | Path) -> str | None:
    """``"a FIFO / named pipe"``, ``"a socket"``, ``"a character device"`` …, or ``None`` for files and folders."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    for test, kind in ((stat.S_ISFIFO, "a FIFO / named pipe"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a plain file"


def safe_name(text: str) -> str:
    """``text`` made safe as a folder name: ``[A-Za-z0-9._-]`` only, no leading dot, at most 100 chars."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return name[:100] or "volume"


def _stem(path: Path) -> str:
    suffix = image_suffix(path)
    name = path.name
    if suffix and name.lower().endswith(suffix) and len(name) > len(suffix):
        name = name[: -len(suffix)]
    return safe_name(name)


def _rel_name(folder: Path, root: Path | None, leaf: str | None = None) -> str:
    parts: list[str] = []
    if root is not None:
        try:
            rel = folder.relative_to(root)
            parts = [p for p in rel.parts if p not in ("", ".")]
        except ValueError:
            parts = [folder.name]
        if not parts and leaf is None:
            parts = [root.resolve().name]
    else:
        parts = [folder.resolve().name]
    if leaf is not None:
        parts.append(leaf)
    return safe_name("_".join(parts))


def _error_source(path: Path, name: str, error: str, kind: Kind | None = None) -> VolumeSource:
    if kind is None:
        kind = IMAGE_SUFFIXES.get(image_suffix(path), "itk")
    return VolumeSource(name=safe_name(name), path=path, kind=kind, error=error)


def _make_unique(sources: list[VolumeSource]) -> None:
    taken: set[str] = set()
    for src in sources:
        name, n = src.name, 1
        if name.lower() in taken:  # case-insensitive: safe on macOS/Windows file systems too
            name = f"{src.name}_{name_tag(source_key(src))}"  # stable: depends on this input only
        while name.lower() in taken:
            n += 1
            name = f"{src.name}_{n}"
        src.name = name
        taken.add(name.lower())


def _key(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()


def _num_key(number: str) -> tuple[int, float, str]:
    try:
        return (0, float(number), number)
    except ValueError:
        return (1, 0.0, number)


def _exc_text(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or exc.__class__.__name__
