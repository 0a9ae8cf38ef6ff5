"""Luminance contrast of the contours in the per-slice overlays of a ``covseg infer`` output, for normal vision and
simulated protanopia and deuteranopia (Machado, Oliveira & Fernandes 2009, severity 1.0, on linear sRGB).

Usage: ``python benchmarks/contour_contrast.py OUT_DIR CT`` where ``OUT_DIR`` was written by
``covseg infer CT --out OUT_DIR --overlays infected`` (default bundle or ``bundles/multiclass_infnet``).

Each ``overlays/slice_<z>.png`` panel is redrawn with :func:`covseg.reports.pictures.panels.axial_panel` and checked
equal to the PNG's pixels, so that each contour pixel's 4-neighbours can be told apart: inside its lesion (the CT),
outside it (the CT beyond, or the contour's casing; for a class, the other class's line where they meet), outside
every class. Prints, per contour colour and vision, the medians over the contour pixels of the WCAG ratio
``(L1 + 0.05) / (L2 + 0.05)`` between the pixel and the mean luminance of its neighbours on each side (and the share
at 3:1 or more), and that of the casing against the CT beyond it (docs/benchmarks.md, "Contours for colour-blind
readers").

For a class map, also the boundary between the two classes: "toward the other class" takes each line pixel within
2 pixels (4-connected) of the other class and its 4-neighbours drawn over on a class's pixels in another colour than
its own (the other class's line, or a casing drawn between the classes); and the count of 4-adjacent pixel pairs
where the two classes' colours touch. Roles are told from the pixels' colours, so that the script measures the
pictures of any commit.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image
from scipy import ndimage
from skimage.transform import resize

from covseg.reports.pictures.contours import CLASS_COLOURS, INFECTION_COLOUR
from covseg.reports.pictures.panels import axial_panel

MACHADO = {"normal": np.eye(3),
           "protan": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                               [-0.003882, -0.048116, 1.051998]]),
           "deutan": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                               [-0.011820, 0.042940, 0.968881]])}


def luminance(rgb: np.ndarray, vision: str) -> np.ndarray:
    """WCAG relative luminance of ``rgb`` (uint8) as seen with ``vision`` (simulated)."""
    c = rgb.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return np.clip(linear @ MACHADO[vision].T, 0.0, 1.0) @ np.array([0.2126, 0.7152, 0.0722])


def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (np.maximum(a, b) + 0.05) / (np.minimum(a, b) + 0.05)


def side_mean(values: np.ndarray, where: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Per pixel of ``at``: the mean of ``values`` over its 4-neighbours in ``where``; NaN elsewhere or where none."""
    total, count = np.zeros(values.shape), np.zeros(values.shape)
    for axis, shift in ((0, 1), (0, -1), (1, 1), (1, -1)):
        total += np.where(np.roll(where, shift, axis), np.roll(values, shift, axis), 0.0)
        count += np.roll(where, shift, axis)
    return np.where(at & (count > 0), total / np.maximum(count, 1), np.nan)


def main(folder: Path, ct: Path) -> None:
    volume = next(p for p in folder.iterdir() if p.is_dir())
    image = sitk.ReadImage(str(ct))
    hu, spacing = sitk.GetArrayFromImage(image).astype(np.float32), image.GetSpacing()
    multi = (volume / "infection_labels.nii.gz").exists()
    labels3 = sitk.GetArrayFromImage(sitk.ReadImage(str(volume / (
        "infection_labels.nii.gz" if multi else "infection_mask.nii.gz")))).astype(np.uint8)
    infection = (labels3 > 0).astype(np.uint8)
    colours = CLASS_COLOURS if multi else {1: INFECTION_COLOUR}
    sides = ("inside", "outside", "outside every class", "casing : CT beyond")
    sides += ("toward the other class",) if multi else ()
    found = {(k, v, s): [] for k in colours for v in MACHADO for s in sides}
    touching = 0
    pngs = sorted((volume / "overlays").glob("slice_*.png"))
    for png in pngs:
        z = int(png.stem.split("_")[1])
        panel = axial_panel(hu, infection, spacing, z, labels3 if multi else None, max_px=512)
        sheet = np.asarray(Image.open(png).convert("RGB"))
        k = sheet.shape[1] // panel.shape[1]
        same = (sheet[-panel.shape[0] * k:] == np.repeat(np.repeat(panel, k, 0), k, 1)).all(axis=2)
        same[-40:, -120:] = True  # the scale bar
        assert same.mean() > 0.97, (png, same.mean())
        plain = axial_panel(hu, np.zeros_like(infection), spacing, z, max_px=512)
        ct_pixels = ~np.any(panel != plain, axis=2)  # not drawn over
        labels = resize(labels3[z], panel.shape[:2], order=0, preserve_range=True, anti_aliasing=False)
        labelled = np.isin(labels.astype(np.uint8), list(colours))
        casing = ~ct_pixels & ~labelled
        lines = {value: np.all(panel == np.array(colour, np.uint8), axis=2) & (labels == value)
                 for value, colour in colours.items()}
        if multi:
            touching += sum(int((np.roll(lines[1], shift, axis) & lines[2]).sum())
                            for axis, shift in ((0, 1), (0, -1), (1, 1), (1, -1)))
        for value in colours:
            mask, line = labels == value, lines[value]
            others = labelled & ~mask
            near = ndimage.binary_dilation(others, iterations=2) & line
            between = labelled & ~ct_pixels & ~line
            for vision in MACHADO:
                lum = luminance(panel, vision)
                for side, where, at in (("inside", mask & ct_pixels, line), ("outside", ~mask, line),
                                        ("outside every class", ~labelled, line),
                                        ("casing : CT beyond", ct_pixels & ~labelled, casing),
                                        ("toward the other class", between, near)):
                    if side not in sides:
                        continue
                    beside = side_mean(lum, where, at)
                    ok = np.isfinite(beside)
                    found[value, vision, side] += list(ratio(lum[ok], beside[ok]))
    print(f"{volume}: {len(pngs)} overlays, each equal to its redrawn panel")
    for value, colour in colours.items():
        for vision in MACHADO:
            cells = [f"{s} {np.median(found[value, vision, s]):.2f} (n={len(found[value, vision, s])}, "
                     f"{np.mean(np.array(found[value, vision, s]) >= 3.0):.0%} >= 3:1)"
                     if found[value, vision, s] else f"{s} -" for s in sides]
            print(f"  {colour} {vision:6s} line : " + ", ".join(cells))
    if multi:
        print(f"  4-adjacent pixel pairs where the two classes' colours touch: {touching}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
