"""The lung window of the pictures and the words they name it and their slice numbering in."""

from __future__ import annotations

import numpy as np

__all__ = ["LUNG_WINDOW", "SLICE_TEXT", "WINDOW_TEXT", "lung_window"]

LUNG_WINDOW = (-600.0, 1500.0)
"""Lung window (level, width) in HU."""
WINDOW_TEXT = f"lung window L {LUNG_WINDOW[0]:g} W {LUNG_WINDOW[1]:g} HU"
"""The window as the pictures name it."""
SLICE_TEXT = "z: 0 = most inferior slice"
"""How the pictures number axial slices (as ``slices.csv``; a PACS usually numbers a chest CT from the top)."""


def lung_window(hu: np.ndarray, level: float = LUNG_WINDOW[0], width: float = LUNG_WINDOW[1]) -> np.ndarray:
    """HU -> float32 [0, 1] in the lung window."""
    lo = level - width / 2.0
    return np.clip((np.asarray(hu, np.float32) - lo) / width, 0.0, 1.0)
