"""The scale bar's length and label, shared by the Pillow and the matplotlib pictures."""

from __future__ import annotations

__all__ = ["SCALE_STEPS_MM", "bar_text", "scale_bar_mm"]

SCALE_STEPS_MM = (10, 20, 50, 100)
"""Lengths a scale bar may have (mm): the longest that fits in a quarter of the panel's width."""


def scale_bar_mm(width_mm: float) -> int:
    """The scale bar's length for a panel ``width_mm`` wide (1 cm on a panel narrower than 4 cm)."""
    fitting = [mm for mm in SCALE_STEPS_MM if mm <= width_mm / 4.0]
    return fitting[-1] if fitting else SCALE_STEPS_MM[0]


def bar_text(mm: int) -> str:
    """The label of a scale bar ``mm`` long (``"2 cm"``)."""
    return f"{mm // 10} cm"
