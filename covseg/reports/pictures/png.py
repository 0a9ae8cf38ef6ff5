"""PNG bytes of a figure, and PNG files written atomically."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from covseg.io.atomic import atomic_path

__all__ = ["png_bytes", "save_png"]


def png_bytes(fig: Figure, dpi: int) -> bytes:
    """``fig`` as PNG bytes at ``dpi``, on black."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="black")
    return buf.getvalue()


def save_png(data: bytes | np.ndarray, path: Path) -> Path:
    """Write ``data`` (PNG bytes, or a uint8 RGB array to encode) to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            Image.fromarray(data).save(tmp, format="PNG")
    return path
