"""What kind of file a path is, told from its name or its file type, without opening it.

NIfTI (``.nii``, ``.nii.gz``) -> kind ``"nifti"``; MetaImage (``.mha``, ``.mhd``) and NRRD (``.nrrd``, ``.nhdr``)
-> kind ``"itk"``; DICOM files are told by their header (:mod:`covseg.io.dicom_header`), kind ``"dicom"``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Literal

__all__ = ["IMAGE_SUFFIXES", "SKIP_SUFFIXES", "Kind", "image_suffix", "special_file_kind"]

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
SKIP_SUFFIXES = {
    ".json", ".txt", ".csv", ".tsv", ".md", ".rst", ".html", ".xml", ".yaml", ".yml", ".log", ".py",
    ".ipynb", ".pdf", ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".raw", ".zraw", ".img",
    ".hdr", ".npy", ".npz", ".pt", ".pth", ".pkl", ".zip", ".tar", ".gz", ".bz2", ".xz", ".7z", ".ini",
    ".cfg", ".toml", ".sh", ".bat", ".exe", ".dll", ".so",
}


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
