"""The 2D COVID-SemiSeg slices (8-bit JPEG images, 0/255 PNG masks, indexed class masks) as in-memory items."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
from PIL import Image

from covseg.io.atomic import atomic_path
from covseg.io.classification import labelled_slices

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
VOLUME_SLICE_NAME = re.compile(r"(?P<volume>.+)\.z(?P<z>\d{4,})")
"""``<volume>.z<NNNN>``: a slice cut from a CT volume by ``covseg slices`` (slice ``z`` of covseg's LPS array)."""


def read_grey(path: Path) -> np.ndarray:
    """An 8-bit image as float32 in [0, 1], shape (H, W). A file that is there but cannot be decoded (not an image,
    cut short) is ``ValueError("<path>: cannot read image (<reason>)")``: PIL's own message may not name it."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read image ({exc})") from exc


def read_class_mask(path: Path, num_classes: int = 3) -> np.ndarray:
    """A class-index mask (H, W) uint8 read by index: palette PNGs give their indices (not their colours), greyscale
    PNGs their values (0 background, 1 GGO, 2 consolidation in COVID-SemiSeg's ``masks-multiclass``)."""
    try:
        with Image.open(path) as img:
            mode = img.mode
            mask = np.asarray(img) if mode in ("P", "L", "I", "I;16") else None
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read image ({exc})") from exc
    if mask is None:
        raise ValueError(f"{path}: class mask must be an indexed or greyscale PNG, got mode {mode}")
    if mask.size and int(mask.max()) >= num_classes:
        raise ValueError(f"{path}: class index {int(mask.max())} out of range for {num_classes} classes")
    return mask.astype(np.uint8)


def write_grey(path: Path, grey: np.ndarray) -> Path:
    """Write a (H, W) map in [0, 1] as an 8-bit PNG (rounded), atomically: no half-written file is left."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.clip(np.rint(grey * 255), 0, 255).astype(np.uint8)).save(tmp, format="PNG")
    return Path(path)


def exit_unless_folders(dataset_dir: str | Path, *relative: str) -> None:
    """Stop the process with one ``error:`` line (``SystemExit``, exit status 1, no traceback) when ``dataset_dir`` or
    one of the sub-folders ``relative`` to it is missing. The first step of the bundles' training and evaluation
    runs: MONAI's config runner would otherwise print the same error inside a long traceback."""
    root = Path(dataset_dir)
    for rel in ("", *relative):
        path = root / rel  # rel "" is the folder itself
        if not path.is_dir():
            where = f"is {root} the dataset folder? " if rel else ""
            raise SystemExit(f"error: {path}: not found ({where}set --dataset_dir)")


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder, sorted by name; hidden files (``.*``: the ``._<name>.jpg`` a macOS copy adds beside
    each image) are left out, as by ``covseg infer`` and ``covseg evaluate``."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def semiseg_items(dataset_dir: str | Path, split: str = "train", limit: int | None = None,
                  labels: str = "binary") -> list[dict]:
    """Items ``{"name", "image", "label"}`` (channel-first arrays) of the labelled train or test split.

    ``labels="binary"``: float 0/1 infection masks from ``masks/``; ``"multiclass"``: uint8 class indices
    (0 background, 1 GGO, 2 consolidation) from ``masks-multiclass/``.
    """
    if labels not in ("binary", "multiclass"):
        raise ValueError(f"labels must be 'binary' or 'multiclass', got {labels!r}")
    root = Path(dataset_dir)
    base = root / "train" / "labeled" if split == "train" else root / "test"
    if not (base / "images").is_dir():
        raise FileNotFoundError(f"{base / 'images'}: not found (is {root} the COVID-SemiSeg folder?)")
    mask_dir = base / ("masks" if labels == "binary" else "masks-multiclass")
    images = list_images(base / "images")
    if not images:
        raise ValueError(f"{base / 'images'}: no images ({', '.join(IMAGE_SUFFIXES)}) to {split} on")
    items = []
    for image_path in images:
        mask_path = mask_dir / f"{image_path.stem}.png"
        if not mask_path.exists():
            raise FileNotFoundError(f"{mask_path}: mask missing for {image_path.name}")
        image = read_grey(image_path)
        mask = _binary_mask(mask_path) if labels == "binary" else read_class_mask(mask_path)
        if mask.shape != image.shape:
            raise ValueError(f"{mask_path}: mask shape {mask.shape} differs from image shape {image.shape}")
        items.append({"name": image_path.stem, "image": image[None], "label": mask[None]})
    return items[:limit] if limit else items


def _binary_mask(path: Path) -> np.ndarray:
    """A 0 / 255 infection mask as float32 0/1 (> 127). A mask of 0 and 1 only would be empty: it is refused with
    the evaluation's words (:func:`covseg.metrics.folders.evaluate_folders`) instead of training on nothing."""
    grey = read_grey(path)
    if 0 < grey.max() <= 1.5 / 255:
        raise ValueError(f"{path}: mask holds only 0 and 1, but masks are read as 0-255 images with infection > 128 "
                         "(save it as 0 / 255)")
    return (grey > 0.5).astype(np.float32)


def unlabelled_items(dataset_dir: str | Path, limit: int | None = None, rewindowed: bool = False) -> list[dict]:
    """Items ``{"name", "image": path}`` of the unlabelled training slices (read lazily: there are 1,600).

    ``rewindowed``: each item also names the window its slice was written with (``"window"``: (level, width);
    the 10 coronacases volumes' is much wider than the labelled slices', ``docs/windowing.md``), so labelling and
    training show it in the labelled slices' window."""
    from covseg.options import as_flag
    from covseg.transforms.intensity import semiseg_window_of

    rewindowed = as_flag(rewindowed, "rewindowed")
    folder = Path(dataset_dir) / "train" / "unlabeled" / "images"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not found (is {dataset_dir} the COVID-SemiSeg folder?)")
    items = [{"name": p.stem, "image": str(p), **({"window": semiseg_window_of(p.name)} if rewindowed else {})}
             for p in list_images(folder)]
    return items[:limit] if limit else items


def pseudo_labelled_items(items: list[dict], label_dir: str | Path) -> list[dict]:
    """The items of ``items`` that have a pseudo label in ``label_dir``, with ``"label"`` set to its path."""
    label_dir = Path(label_dir)
    found = [{**it, "label": str(label_dir / f"{it['name']}.png")} for it in items]
    return [it for it in found if Path(it["label"]).exists()]


def pseudo_labelled_training_items(dataset_dir: str | Path, label_dir: str | Path,
                                   rewindowed: bool = False) -> list[dict]:
    """The unlabelled slices of ``dataset_dir`` that have a pseudo label in ``label_dir`` (the training configs'
    ``--pseudo_label_dir``). A folder that is not there, or holds no label named like an unlabelled slice, is an
    error (``FileNotFoundError`` / ``ValueError`` naming it): a mistyped folder would otherwise train on the
    labelled slices alone."""
    label_dir = Path(label_dir)
    if not label_dir.is_dir():
        raise FileNotFoundError(f"{label_dir}: pseudo-label folder not found (--pseudo_label_dir)")
    items = pseudo_labelled_items(unlabelled_items(dataset_dir, None, rewindowed), label_dir)
    if not items:
        raise ValueError(f"{label_dir}: no pseudo label named like an unlabelled slice of {dataset_dir} "
                         "(<name>.png for train/unlabeled/images/<name>.jpg; --pseudo_label_dir)")
    return items


def infection_free_items(dataset_dir: str | Path, count: int, source: str = "sars-cov-2-ct", split: str = "train",
                         seed: int = 0) -> list[dict]:
    """``count`` non-COVID slices of a ``labels.csv`` folder (``../shared/data/covid-ct-cls``), drawn by ``seed``
    from ``source``'s ``split``, as segmentation items with an empty infection mask (0: none).

    Negatives for Inf-Net: the labelled slices all show infection, and a model trained on them alone marks vessels
    as infection on scans without COVID-19 (it did not cure that: docs/benchmarks.md). Caveat: non-COVID there is
    not always healthy (other lung disease)."""
    if count <= 0:
        return []
    negatives = [it for it in labelled_slices(dataset_dir, source, split) if it["label"] == 0]
    if count > len(negatives):
        raise ValueError(f"{dataset_dir}: asked for {count} non-COVID {source} {split} slices, it has {len(negatives)}")
    chosen = sorted(random.Random(seed).sample(range(len(negatives)), count))
    items = []
    for i in chosen:
        image = read_grey(Path(negatives[i]["image"]))
        items.append({"name": Path(negatives[i]["name"]).stem, "image": image[None],
                      "label": np.zeros((1, *image.shape), np.float32)})
    return items


def _seeded_order(count: int, seed: int) -> list[int]:
    """0..count-1 shuffled by ``seed``: the order both splits of the training items cut."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return order


def fold_split(items: list[dict], folds: int, fold: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Fold ``fold`` of a ``folds``-fold cross-validation of the training items: the same seeded order as
    :func:`split_train_val`, cut into ``folds`` contiguous parts, part ``fold`` held out (with 50 items and 10 folds,
    fold 0 is split_train_val's 5 validation items)."""
    if not 2 <= folds <= len(items) or not 0 <= fold < folds:
        raise ValueError(f"need 2 <= folds <= {len(items)} items and 0 <= fold < folds, got folds={folds}, "
                         f"fold={fold}")
    order = _seeded_order(len(items), seed)
    held = set(order[fold * len(items) // folds:(fold + 1) * len(items) // folds])
    return ([it for i, it in enumerate(items) if i not in held], [it for i, it in enumerate(items) if i in held])


def volume_of(name: str | None) -> str | None:
    """The volume a slice named ``<volume>.z<NNNN>`` was cut from (:data:`VOLUME_SLICE_NAME`), else None."""
    found = VOLUME_SLICE_NAME.fullmatch(name or "")
    return found["volume"] if found else None


def split_train_val(items: list[dict], val_count: int = 5, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """A fixed random validation subset carved from the training items (never the test split).

    When every item is a slice cut from a volume (``covseg slices`` names them ``<volume>.z<NNNN>``), whole volumes
    are held out, in a seeded order, until at least ``val_count`` slices are (neighbouring slices of one scan would
    otherwise sit on both sides); at least one volume stays for training, so one volume gives no validation.
    Otherwise ``val_count`` items drawn in a seeded order."""
    volumes = [volume_of(item.get("name")) for item in items]
    if items and None not in volumes:
        names = sorted(set(volumes))
        held: set[str] = set()
        for index in _seeded_order(len(names), seed)[:len(names) - 1]:
            if sum(v in held for v in volumes) >= val_count:
                break
            held.add(names[index])
        val_ids = {i for i, v in enumerate(volumes) if v in held} if val_count > 0 else set()
    else:
        order = _seeded_order(len(items), seed)
        val_ids = set(order[:val_count]) if val_count < len(items) else set()
    train = [it for i, it in enumerate(items) if i not in val_ids]
    val = [it for i, it in enumerate(items) if i in val_ids]
    return train, val
