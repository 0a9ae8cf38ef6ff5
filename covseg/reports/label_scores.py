"""A volume's scores against its reference label: which of the label's values are infection (``covseg infer
--label-values``) and, for a multi-class model, ground-glass opacity and consolidation (``--label-classes``); the
warnings about the values; the binary and per-class metrics of ``report.json``.

Without given values every non-zero voxel is infection and a multi-class model's classes are the label's own 1 and
2, with a warning when the label holds values that reading may get wrong (COVID-19-CT-Seg's lung-and-infection masks:
1 and 2 lungs, 3 infection). Given values are scored as given, with a warning naming the file when one never occurs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from covseg.metrics.binary import binary_scores
from covseg.transforms.volume_slices import class_map, infection_mask

__all__ = ["MAX_LABEL_VALUE", "METRIC_KEYS", "LabelScores", "LabelValues", "class_names", "label_value_warnings",
           "score_label"]

METRIC_KEYS = ("dice", "sensitivity", "specificity", "precision", "iou", "mae")
MAX_LABEL_VALUE = 65535
"""The largest label value that may be given (a label is read as up to 16-bit integers)."""


@dataclass(frozen=True)
class LabelValues:
    """The label values that are infection (``infection``) and those of GGO and consolidation (``classes``; infection
    is both unless ``infection`` says otherwise); None: not given."""

    infection: tuple[int, ...] | None = None
    classes: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.infection is None and self.classes is not None:
            object.__setattr__(self, "infection", tuple(self.classes))

    @property
    def option(self) -> str:
        """The ``covseg infer`` option that gave them."""
        return "--label-classes" if self.classes is not None else "--label-values"

    @classmethod
    def from_config(cls, values: object = None, classes: object = None) -> LabelValues | None:
        """A bundle config's ``label_values`` / ``label_classes`` (lists of integers, or one; null: not given), as
        ``python -m monai.bundle run inference --label_values "[3]"`` passes them; None when neither is given. A
        bad value raises a one-line ``ValueError`` naming the key."""
        if values is not None and classes is not None:
            raise ValueError(f"give label_values or label_classes, not both (got {values!r} and {classes!r}; "
                             "label_classes' two values are the infection)")
        if classes is not None:
            pair = _positive_ints("label_classes", classes, '"[1, 2]"')
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ValueError(f"label_classes: give 2 different values [GGO, consolidation], e.g. --label_classes "
                                 f'"[1, 2]", got {classes!r}')
            return cls(classes=(pair[0], pair[1]))
        return None if values is None else cls(_positive_ints("label_values", values, '"[3]" or "[1, 2]"'))


def _positive_ints(key: str, given: object, example: str) -> tuple[int, ...]:
    """``given`` (a list or tuple of integers, or one) as a tuple, or a one-line ``ValueError``."""
    items = list(given) if isinstance(given, (list, tuple)) else [given]
    if not items or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_LABEL_VALUE
                            for v in items):
        raise ValueError(f"{key}: give positive integers as a list, e.g. --{key} {example}, got {given!r}")
    return tuple(items)


@dataclass
class LabelScores:
    """What :func:`score_label` found: ``values`` the label values scored as infection, ``classes`` the label value
    of each class of the per-class scores (None without them)."""

    metrics: dict[str, float]
    class_metrics: dict[str, dict[str, float]] | None
    values: list[int | float]
    classes: dict[str, int] | None
    warnings: list[str]


def _numbers(values: np.ndarray) -> list[int | float]:
    return [int(v) if float(v).is_integer() else float(v) for v in values]


def _shown(values: list) -> str:
    return ", ".join(map(str, values[:8])) + (f", … ({len(values)} values)" if len(values) > 8 else "")


def label_value_warnings(values: list[int | float], n_classes: int = 1) -> list[str]:
    """A warning when a reference label's non-zero ``values`` may be misread with no values given: for a binary
    model, several values other than GGO / consolidation's 1 and 2 (all are scored as infection, so lung labels in
    the file would count too); for a multi-class model, values beyond 1..``n_classes`` - 1."""
    if n_classes <= 1 and len(values) > 1 and not set(values) <= {1, 2}:
        return [f"label holds values {_shown(values)}: every non-zero voxel is scored as infection (name the "
                "infection's values with --label-values V[,V])"]
    if n_classes > 1 and any(v not in range(1, n_classes) for v in values):
        return [f"label holds values {_shown(values)}: the classes are 1..{n_classes - 1}; every non-zero voxel is "
                "scored as infection (name the values with --label-classes GGO,CONS)"]
    return []


def _absent_value_warnings(label: np.ndarray, given: LabelValues, label_path: str | None) -> list[str]:
    """One line naming the file when values given never occur in the label."""
    wanted = list(dict.fromkeys((*given.infection, *(given.classes or ()))))
    missing = [v for v in wanted if not (label == v).any()]
    if not missing:
        return []
    name = Path(label_path).name if label_path else "label"
    held = _numbers(np.unique(label[label != 0]))
    return [f"{name}: value{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} given by {given.option} "
            f"never occur{'' if len(missing) > 1 else 's'} in the label (it holds {_shown(held) or 'only 0'})"]


def class_names(n_classes: int) -> list[str]:
    """The names of a model's classes, background first: ``background``, ``ggo``, ``consolidation`` for 3."""
    from covseg.metrics.multiclass import DEFAULT_CLASSES

    return list(DEFAULT_CLASSES) if n_classes == len(DEFAULT_CLASSES) else [f"class{k}" for k in range(n_classes)]


def _class_metrics(classes: np.ndarray, label: np.ndarray, n_classes: int) -> dict[str, dict[str, float]]:
    """Dice / Sen / Spec / Prec / MAE per foreground class of the label map against a class-index label."""
    from covseg.metrics.multiclass import class_scores

    scores = class_scores(classes.astype(np.int64), label.astype(np.int64), n_classes, class_names(n_classes))
    return {name: {k: round(float(sc[k]), 6) for k in METRIC_KEYS} for name, sc in scores.items()}


def score_label(label: np.ndarray, infection: np.ndarray, *, prob: np.ndarray | None = None,
                classes: np.ndarray | None = None, n_classes: int = 1, values: LabelValues | None = None,
                label_path: str | None = None) -> LabelScores:
    """Score the ``infection`` mask (and ``prob``, for MAE) against ``label`` over the whole volume; a multi-class
    model's ``classes`` (0..``n_classes`` - 1) per class as well, against the label's 1 and 2 when it holds a value
    above 1, or against the ``values.classes`` given."""
    if label.shape != infection.shape:
        raise ValueError(f"label shape {label.shape} differs from the prediction's {infection.shape}")
    values = values or LabelValues()
    multi = classes is not None and n_classes > 1
    gt = infection_mask(label, values.infection)
    if values.infection is None:
        scored = _numbers(np.unique(label[gt]))
        warnings = label_value_warnings(scored, n_classes if multi else 1)
    else:
        scored = list(values.infection)
        warnings = _absent_value_warnings(label, values, label_path)
    scores = binary_scores(infection > 0, gt)
    if prob is not None:
        scores["mae"] = binary_scores(prob, gt)["mae"]
    class_metrics = class_values = None
    names = class_names(n_classes)
    if multi and values.classes is not None:
        class_metrics = _class_metrics(classes, class_map(label, values.classes), n_classes)
        class_values = dict(zip(names[1:], values.classes))
    elif multi and values.infection is None and int(label.max(initial=0)) > 1:
        class_metrics = _class_metrics(classes, label, n_classes)
        class_values = {name: k for k, name in enumerate(names) if k}
    return LabelScores({k: round(float(scores[k]), 6) for k in METRIC_KEYS}, class_metrics, scored, class_values,
                       warnings)
