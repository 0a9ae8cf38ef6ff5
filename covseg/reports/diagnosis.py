"""Words for a joint diagnosis (the ``diagnosis.json`` of ``covseg diagnose``): the decision in one line for the
console and report.html (:func:`decision_summary`), and the activation montage's title (:func:`montage_title`)."""

from __future__ import annotations

__all__ = ["decision_lines", "decision_summary", "montage_title", "positive_fraction", "shown_verdict", "verdict"]


def verdict(d: dict) -> str:
    """``positive``, ``negative`` or ``indeterminate`` (a diagnosis.json without ``decision``: from ``positive``)."""
    if d.get("decision") in ("positive", "negative", "indeterminate"):
        return str(d["decision"])
    return "positive" if d.get("positive") else "negative"


def shown_verdict(d: dict) -> str:
    """The verdict as the console and the pictures show it: what needs a look in capitals."""
    v = verdict(d)
    return v if v == "negative" else v.upper()


def decision_summary(d: dict) -> str:
    """``POSITIVE (40 of 63 classified lung slices positive, threshold > 31.5; 6 end slices with little lung not
    classified); infection 12.3 mL (1.05 % of lung)``; an indeterminate one names its reason first; a patient that
    was not segmented ends ``; not segmented``."""
    skipped = int(d["lung_slices"]) - int(d["classified_slices"])
    ends = f"; {skipped} end slices with little lung not classified" if skipped else ""
    reason = f"{d['indeterminate_reason']}; " if verdict(d) == "indeterminate" and d.get("indeterminate_reason") else ""
    infection = (f"infection {d['infection_ml']:.1f} mL ({d['lung_involvement_percent']:.2f} % of lung)"
                 if d.get("segmented", True) else "not segmented")  # an empty mask is no measured 0 %
    return (f"{shown_verdict(d)} ({reason}{d['positive_slices']} of {d['classified_slices']} classified lung slices "
            f"positive, threshold > {d['patient_threshold_slices']}{ends}); {infection}")


def decision_lines(results) -> list[str]:
    """``<volume>: <decision_summary>`` for each finished volume of a batch whose folder holds a ``diagnosis.json``
    (``covseg diagnose`` and the classifier bundle's ``inference`` run print them under the table)."""
    import json
    from pathlib import Path

    lines = []
    for r in results:
        path = Path(r.out_dir) / "diagnosis.json" if r.ok and r.out_dir else None
        if path is not None and path.is_file():
            d = json.loads(path.read_text())
            lines.append(f"{d.get('name', r.name)}: {decision_summary(d)}")
    return lines


def montage_title(name: str, d: dict, shown: int) -> str:
    """One line for the montage's head: ``<name>: NEGATIVE, 9 of 63 classified slices >= 0.50 (positive when more
    than 31.5); the 6 highest-scoring slices at least 10 apart``; ``<name>: INDETERMINATE (no lung found)`` where no
    slice was classified."""
    if not int(d.get("classified_slices") or 0):  # nothing to show: say why, not "the 0 highest-scoring slices"
        reason = "no lung found" if float(d.get("largest_lung_cm2", 1.0)) <= 0.0 else "no lung slice classified"
        return f"{name}: {verdict(d).upper()} ({reason})"
    gap = int(d.get("montage_min_gap", 1))
    why = (f" (largest lung cross-section {d['largest_lung_cm2']:g} cm²)"
           if verdict(d) == "indeterminate" and "largest_lung_cm2" in d else "")
    return (f"{name}: {verdict(d).upper()}{why}, {d['positive_slices']} of {d['classified_slices']} classified slices "
            f">= {d['slice_threshold']:.2f} (positive when more than {d['patient_threshold_slices']:g}); "
            f"the {shown} highest-scoring slices" + (f" at least {gap} apart" if gap > 1 else ""))


def positive_fraction(d: dict) -> float:
    """Positive slices / classified slices (0 when none was classified)."""
    n = int(d.get("classified_slices") or 0)
    return int(d.get("positive_slices") or 0) / n if n else 0.0
