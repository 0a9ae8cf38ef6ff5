"""The papers' table of toolbox figures as text (:func:`format_table_row`) and the per-image figures as CSV; the
per-volume scores of ``covseg evaluate`` on volumes as a console table (:func:`volume_table`) and as CSV."""

from __future__ import annotations

from covseg.metrics.toolbox import IMAGE_KEYS

__all__ = ["TABLE_COLUMNS", "VOLUME_COLUMNS", "format_table_row", "per_image_csv_text", "per_volume_csv_text",
           "volume_table"]


TABLE_COLUMNS = (("Dice", "meanDic"), ("Sen.", "meanSen"), ("Spec.", "meanSpe"),
                 ("S-alpha", "Sm"), ("E-phi", "meanEm"), ("MAE", "MAE"))
"""The paper tables' columns and the figure each shows."""

VOLUME_COLUMNS = (("Dice", "dice"), ("Sen.", "sensitivity"), ("Spec.", "specificity"), ("Prec.", "precision"),
                  ("IoU", "iou"), ("MAE", "mae"))
"""The per-volume table's columns and the metric each shows (:data:`covseg.reports.label_scores.METRIC_KEYS`)."""


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



def _class_names(entries: list[dict]) -> list[str]:
    return list(dict.fromkeys(name for e in entries for name in (e.get("class_metrics") or {})))


def volume_table(entries: list[dict]) -> str:
    """Aligned plain-text table of :func:`covseg.metrics.volumes.score_volumes` entries: one row per volume (and per
    class, when there are per-class scores), then a ``mean of N`` row over the volumes scored, as ``covseg infer``'s
    console table gives it (:func:`covseg.reports.score_summary.score_summary`)."""
    from covseg.reports.score_summary import score_summary

    classes = _class_names(entries)
    head = ["volume", "status", *(["class"] if classes else []), *(h for h, _ in VOLUME_COLUMNS)]

    def cells(scores: dict | None, stat: str | None = None) -> list[str]:
        """Three decimals of each column's metric (its ``stat`` in a :func:`score_summary` figure); ``-``: none."""
        out = []
        for _, key in VOLUME_COLUMNS:
            value = (scores or {}).get(key)
            value = value.get(stat) if stat is not None and isinstance(value, dict) else value
            out.append("-" if value is None else f"{value:.3f}")
        return out

    rows = []
    for e in entries:
        if e.get("status") != "ok":
            rows.append([e["name"], "FAILED"] + [""] * (len(head) - 2))
            continue
        rows.append([e["name"], "ok", *(["infection"] if classes else []), *cells(e["metrics"])])
        rows += [["", "", name, *cells(e["class_metrics"].get(name))] for name in classes
                 if name in (e.get("class_metrics") or {})]
    summary = score_summary(entries)
    if summary is not None and summary["n"] > 1:  # the figure of a test set: the mean over its volumes
        mean = f"mean of {summary['n']}"
        rows.append([mean, "", *(["infection"] if classes else []), *cells(summary["metrics"], "mean")])
        rows += [[mean, "", name, *cells(summary.get("classes", {}).get(name), "mean")] for name in classes]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    first_number = len(head) - len(VOLUME_COLUMNS)

    def line(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if i >= first_number else c.ljust(w)
                         for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    return "\n".join([line(head), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def per_volume_csv_text(entries: list[dict]) -> str:
    """:func:`covseg.metrics.volumes.score_volumes` entries as CSV text, one row per volume: ``name``, ``status``,
    ``pred``, ``label``, the metrics, ``label_values``, ``<class>_<metric>`` for each class scored, ``warnings``,
    ``error``."""
    import csv
    import io

    from covseg.reports.label_scores import METRIC_KEYS

    classes = _class_names(entries)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("name", "status", "pred", "label", *METRIC_KEYS, "label_values",
                     *(f"{c}_{k}" for c in classes for k in METRIC_KEYS), "warnings", "error"))
    for e in entries:
        metrics, per_class = e.get("metrics") or {}, e.get("class_metrics") or {}
        writer.writerow([e["name"], e["status"], e.get("pred", ""), e.get("label", ""),
                         *(metrics.get(k, "") for k in METRIC_KEYS),
                         ",".join(str(v) for v in e.get("label_values") or ()),
                         *((per_class.get(c) or {}).get(k, "") for c in classes for k in METRIC_KEYS),
                         "; ".join(e.get("warnings") or ()), e.get("error") or ""])
    return buffer.getvalue()
