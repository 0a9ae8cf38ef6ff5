"""The papers' table of toolbox figures as text (:func:`format_table_row`) and the per-image figures as CSV."""

from __future__ import annotations

from covseg.metrics.toolbox import IMAGE_KEYS

__all__ = ["TABLE_COLUMNS", "format_table_row", "per_image_csv_text"]


TABLE_COLUMNS = (("Dice", "meanDic"), ("Sen.", "meanSen"), ("Spec.", "meanSpe"),
                 ("S-alpha", "Sm"), ("E-phi", "meanEm"), ("MAE", "MAE"))
"""The paper tables' columns and the figure each shows."""


def format_table_row(figures: dict, name: str | None = None) -> str:
    """Header and row of the paper table (Dice, Sen., Spec., S-alpha, E-phi mean, MAE), three decimals."""
    head = [f"{h:>7}" for h, _ in TABLE_COLUMNS]
    row = [f"{figures[k]:>7.3f}" for _, k in TABLE_COLUMNS]
    if name is not None:
        width = max(len(name), len("model"))
        head.insert(0, f"{'model':<{width}}")
        row.insert(0, f"{name:<{width}}")
    return " ".join(head) + "\n" + " ".join(row)


def per_image_csv_text(per_image: list[dict], digits: int = 6) -> str:
    """The ``per_image`` rows of :func:`evaluate_folders` as CSV text: ``name`` then :data:`IMAGE_KEYS`."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("name", *IMAGE_KEYS))
    for row in per_image:
        writer.writerow([row["name"], *(f"{row[k]:.{digits}f}" for k in IMAGE_KEYS)])
    return buffer.getvalue()

