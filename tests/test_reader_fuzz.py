"""Seeded fuzz of the readers (issue #16): damaged real NIfTI and DICOM files never give a traceback or a
silent wrong result.

Each case must end in a one-line :class:`CovsegInputError`, or read to exactly the clean file's voxels with a
usable geometry (finite origin, spacing > 0). The files are cut from ../shared/data/ct-volumes (chest-cip64
NIfTI, chest-2slice DICOM) to 64 x 64 voxels per slice so that 300 cases take a few seconds.

Out of scope, because no reader can detect it: damage inside *uncompressed* voxel data (raw ``.nii``, DICOM
PixelData carry no checksum) and header edits to another valid value (a different spacing or rescale is a
different image, not a corrupt one). Damage inside a ``.nii.gz`` stream is always caught by the gzip CRC.
"""

from __future__ import annotations

import gzip
import io
import random
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from covseg.io import CovsegInputError, read_volume

SEED = 16


@pytest.fixture(scope="module")
def clean_nifti(ct_volumes_dir, tmp_path_factory) -> Path:
    img = nib.load(str(ct_volumes_dir / "chest-cip64" / "ct.nii.gz"))
    data = np.asarray(img.dataobj)[:, :, 30:46]  # 64 x 64 x 16 real voxels, the file's own header
    path = tmp_path_factory.mktemp("fuzz") / "clean.nii.gz"
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(path))
    return path


@pytest.fixture(scope="module")
def clean_dicom(ct_volumes_dir, tmp_path_factory) -> list[bytes]:
    """The two chest-2slice DICOM files cropped to 64 x 64 pixels of lung (real headers and values)."""
    out = []
    for f in sorted((ct_volumes_dir / "chest-2slice" / "dicom").glob("*.dcm")):
        ds = pydicom.dcmread(f)
        pixels = ds.pixel_array[200:264, 120:184].copy()  # right lung and chest wall
        ds.PixelData = pixels.tobytes()
        ds.Rows, ds.Columns = pixels.shape
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def _check(read: Callable[[], object], clean: object, case: str, problems: list[str]) -> str:
    """Run one case; record a problem unless it is a one-line input error or the clean result."""
    try:
        vol = read()
    except CovsegInputError as exc:
        if "\n" in str(exc):
            problems.append(f"{case}: multi-line error {exc!r}")
        return "error"
    except Exception as exc:  # noqa: BLE001 - exactly what the fuzz looks for
        problems.append(f"{case}: {type(exc).__name__}: {exc}"[:300])
        return "traceback"
    if vol.array.shape != clean.array.shape or not np.array_equal(vol.array, clean.array):
        problems.append(f"{case}: silent different voxels (shape {vol.array.shape})")
        return "silent"
    if not (np.all(np.isfinite(vol.spacing)) and min(vol.spacing) > 0 and np.all(np.isfinite(vol.origin))):
        problems.append(f"{case}: unusable geometry spacing={vol.spacing} origin={vol.origin}")
        return "silent"
    return "same"


# ------------------------------------------------------------------------------------------------- NIfTI
def _nifti_cases(clean: bytes, rng: random.Random) -> list[tuple[str, bytes]]:
    raw = gzip.decompress(clean)
    cases = []
    for i in range(70):  # byte flips anywhere in the compressed file
        b = bytearray(clean)
        for _ in range(rng.randint(1, 6)):
            b[rng.randrange(len(b))] ^= rng.randint(1, 255)
        cases.append((f"flip{i}", bytes(b)))
    for i in range(25):  # truncation
        cases.append((f"trunc{i}", clean[: rng.randrange(len(clean))]))
    fields = {  # (offset, numpy type) of header fields whose damage makes the file inconsistent
        "sizeof_hdr": (0, "<i4"), "dim0": (40, "<i2"), "dim1": (42, "<i2"), "dim2": (44, "<i2"), "dim3": (46, "<i2"),
        "dim4": (48, "<i2"), "datatype": (70, "<i2"), "bitpix": (72, "<i2"), "pixdim1": (80, "<f4"),
        "pixdim2": (84, "<f4"), "pixdim3": (88, "<f4"), "vox_offset": (108, "<f4"), "magic": (344, "S4"),
    }
    bad_values = {"<i2": [0, -1, 1, 2, 5, 7, 8, 100, 32767, -32768], "<i4": [0, 1, 540, 348 * 2, -1],
                  "<f4": [0.0, -1.0, float("nan"), float("inf"), 1e30, -1e-30], "S4": [b"ni1\0", b"n+2\0", b"\0" * 4]}
    for i in range(75):
        name = rng.choice(sorted(fields))
        offset, kind = fields[name]
        value = rng.choice(bad_values[kind])
        b = bytearray(raw)
        b[offset: offset + np.dtype(kind).itemsize] = np.array([value], dtype=kind).tobytes()
        cases.append((f"header{i}:{name}={value!r}", gzip.compress(bytes(b), mtime=0)))
    cases.append(("trailing-bytes", gzip.compress(raw + b"\0" * 4096, mtime=0)))
    return cases


def test_nifti_fuzz(clean_nifti, tmp_path):
    clean = read_volume(clean_nifti)
    rng = random.Random(SEED)
    problems: list[str] = []
    outcomes: dict[str, int] = {}
    for case, data in _nifti_cases(clean_nifti.read_bytes(), rng):
        path = tmp_path / "case.nii.gz"
        path.write_bytes(data)
        outcome = _check(lambda p=path: read_volume(p), clean, case, problems)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert problems == [], f"{len(problems)} bad outcomes ({outcomes}):\n" + "\n".join(problems)
    assert sum(outcomes.values()) == 171 and outcomes["error"] > 100


# ------------------------------------------------------------------------------------------------- DICOM
def _dicom_cases(files: list[bytes], rng: random.Random) -> list[tuple[str, int, bytes]]:
    cases = []
    header_end = [f.index(b"\xe0\x7f\x10\x00") for f in files]  # the PixelData tag: flips before it only
    for i in range(40):
        k = rng.randrange(len(files))
        b = bytearray(files[k])
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(header_end[k])] ^= rng.randint(1, 255)
        cases.append((f"flip{i}", k, bytes(b)))
    for i in range(20):
        k = rng.randrange(len(files))
        cases.append((f"trunc{i}", k, files[k][: rng.randrange(len(files[k]))]))
    edits: list[tuple[str, object]] = [
        ("Rows", 65), ("Rows", 0), ("Columns", 32), ("BitsAllocated", 8), ("BitsAllocated", 32),
        ("BitsStored", 40), ("PixelRepresentation", 7), ("SamplesPerPixel", 3), ("ImagePositionPatient", ["a", 0, 0]),
        ("ImagePositionPatient", [0, 0]), ("ImageOrientationPatient", [0, 0, 0, 0, 0, 0]),
        ("ImageOrientationPatient", [1, 0, 0, 1, 0, 0]), ("PixelSpacing", [0, 0]), ("PixelSpacing", [-1, -1]),
        ("PixelSpacing", ["nan", "nan"]), ("RescaleSlope", "nan"), ("RescaleSlope", "abc"), ("Modality", "MR"),
        ("PixelData", b""), ("PixelData", b"\0" * 100), ("NumberOfFrames", 5), ("PhotometricInterpretation", "RGB"),
        ("SeriesInstanceUID", ""), ("ImagePositionPatient", None), ("Rows", None),
    ]
    for i, (tag, value) in enumerate(edits * 2):
        k = i % len(files)
        ds = pydicom.dcmread(io.BytesIO(files[k]))
        buf = io.BytesIO()
        try:
            if value is None:
                delattr(ds, tag)
            else:
                setattr(ds, tag, value)
            ds.save_as(buf, enforce_file_format=True)
        except Exception:  # noqa: BLE001 - pydicom refuses some values: then there is no such file to read
            continue
        cases.append((f"tag{i}:{tag}={value!r}"[:80], k, buf.getvalue()))
    return cases


def test_dicom_fuzz(clean_dicom, tmp_path):
    series = tmp_path / "clean"
    series.mkdir()
    for k, data in enumerate(clean_dicom):
        (series / f"{k}.dcm").write_bytes(data)
    clean = read_volume(series)
    rng = random.Random(SEED)
    problems: list[str] = []
    outcomes: dict[str, int] = {}
    for n, (case, k, data) in enumerate(_dicom_cases(clean_dicom, rng)):
        folder = tmp_path / f"c{n}"
        folder.mkdir()
        for j, good in enumerate(clean_dicom):
            (folder / f"{j}.dcm").write_bytes(data if j == k else good)
        outcome = _check(lambda f=folder: read_volume(f), clean, case, problems)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert problems == [], f"{len(problems)} bad outcomes ({outcomes}):\n" + "\n".join(problems)
    assert sum(outcomes.values()) >= 100 and outcomes["error"] > 50
