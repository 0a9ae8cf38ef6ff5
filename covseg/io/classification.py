"""Labelled classification slices listed in a ``labels.csv`` (``file, label, [source, group, split, ...]``).

The format is that of ``../shared/data/covid-ct-cls``: ``file`` relative to the CSV's folder and ``label``
``covid`` / ``noncovid`` (``1`` / ``0`` and ``positive`` / ``negative`` are read too). Items are dicts
``{"name", "image": path, "label": 0/1, "source", "group", "split"}`` for MONAI datasets.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

POSITIVE = {"covid", "1", "positive", "covid-19", "true"}
NEGATIVE = {"noncovid", "non-covid", "0", "negative", "false"}


def parse_label(text: str, where: str) -> int:
    """1 for a COVID-19 label, 0 for non-COVID; anything else is an error naming ``where``."""
    value = text.strip().lower()
    if value in POSITIVE:
        return 1
    if value in NEGATIVE:
        return 0
    raise ValueError(f"{where}: label {text!r} is neither covid nor noncovid")


def exit_unless_labels(dataset_dir: str | Path, labels_csv: str | Path | None = None) -> None:
    """Stop the process with one ``error:`` line (``SystemExit``, exit status 1, no traceback) when the table
    :func:`labelled_slices` reads (``dataset_dir/labels.csv``, or ``labels_csv``) is missing: the classifier
    bundle's training and evaluation check it first, as the other bundles check their split folders."""
    table = Path(labels_csv) if labels_csv else Path(dataset_dir) / "labels.csv"
    if not table.is_file():
        raise SystemExit(f"error: {table}: not found (is {dataset_dir} a folder of labelled slices? it needs a "
                         "labels.csv with the columns file,label[,source,split]; set --dataset_dir)")


def exit_if_no_slices(items: Sequence[dict], dataset_dir: str | Path, sources: Sequence[str] | str | None = None,
                      splits: Sequence[str] | str | None = None, labels_csv: str | Path | None = None) -> list[dict]:
    """``items`` (of :func:`labelled_slices`), or one ``error:`` line (``SystemExit``, exit status 1) when the
    selection holds no slice: a ``labels.csv`` without the sources or splits asked for."""
    if items:
        return list(items)
    table = Path(labels_csv) if labels_csv else Path(dataset_dir) / "labels.csv"
    raise SystemExit(f"error: {table}: no slice of sources {sources or 'any'} in splits {splits or 'any'} "
                     "(set --sources / --splits, null for all)")


def labelled_slices(dataset_dir: str | Path, sources: Sequence[str] | str | None = None,
                    splits: Sequence[str] | str | None = None, labels_csv: str | Path | None = None,
                    limit: int | None = None) -> list[dict]:
    """Items of ``dataset_dir/labels.csv`` (or ``labels_csv``) filtered by ``sources`` and ``splits`` (None: all;
    a CSV without a ``source`` or ``split`` column is not filtered on it).

    ``limit`` keeps the first N items of each class (smoke runs). Missing image files are an error.
    """
    root = Path(dataset_dir)
    table = Path(labels_csv) if labels_csv else root / "labels.csv"
    if not table.exists():
        raise FileNotFoundError(f"{table}: labels.csv not found (is {root} a folder of labelled slices?)")
    sources = [sources] if isinstance(sources, str) else sources
    splits = [splits] if isinstance(splits, str) else splits
    items: list[dict] = []
    with open(table, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"file", "label"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{table}: missing column(s) {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            if sources and "source" in row and row["source"] not in sources:
                continue
            if splits and "split" in row and row["split"] not in splits:
                continue
            path = root / row["file"]
            if not path.exists():
                raise FileNotFoundError(f"{path}: listed in {table} (line {line}) but missing")
            items.append({"name": row["file"], "image": str(path),
                          "label": parse_label(row["label"], f"{table}:{line}"),
                          "source": row.get("source") or "", "group": row.get("group") or "",
                          "split": row.get("split") or ""})
    if limit:
        items = [it for it in items if it["label"] == 1][:limit] + [it for it in items if it["label"] == 0][:limit]
    return items
