"""covseg.metrics: the papers' metrics with the Inf-Net authors' toolbox conventions, and binary volume metrics.

The names below are loaded on first use (PEP 562): ``covseg.metrics.binary``, which every volume report uses, must
not import the toolbox's ``py_sod_metrics`` (it imports scikit-learn: ~0.5 s before ``covseg infer``'s first slice).
The ignite wrappers live in :mod:`covseg.metrics.handlers`.
"""

from __future__ import annotations

from covseg.lazy import lazy_names

_HOMES = {
    "binary_scores": "binary",
    "evaluate_folders": "folders",
    "format_table_row": "tables",
    "score_map": "toolbox",
}

__all__ = sorted(_HOMES)
__getattr__ = lazy_names(__name__, _HOMES)
