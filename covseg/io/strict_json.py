"""Strict JSON text for the files covseg writes (``report.json``, ``metrics.json``, ``summary.json``, ...).

Python's ``json`` writes ``NaN`` and ``Infinity`` for non-finite floats, which strict parsers (browsers' JSON.parse,
jq, most other languages) reject. Here every non-finite float becomes ``null`` (an AUC of one class, say).
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["finite_or_none", "json_text"]


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN / infinite float (in dicts, lists and tuples, at any depth) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def json_text(value: Any, indent: int | None = 2) -> str:
    """``json.dumps`` of ``value`` after :func:`finite_or_none`, refusing anything non-finite left."""
    return json.dumps(finite_or_none(value), indent=indent, allow_nan=False)
