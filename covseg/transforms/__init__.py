"""covseg.transforms: MONAI-style preprocessing (plain function, array ``Transform``, dict ``...d`` transform).

- ``intensity``: HU window to the COVID-SemiSeg 8-bit look (``window_hu``, ``SEMISEG_WINDOW``);
- ``lung``: automatic lung mask, 1 right / 2 left (``lung_mask``);
- ``crop``: lung bounding box crop and its exact inverse (``lung_box``, ``crop_to_box``, ``paste_from_box``);
- ``edges``: edge map of a mask as the Inf-Net dataset derives it (``edge_map``).
"""

from covseg.transforms.crop import (
    DEFAULT_MARGIN_PX,
    Box,
    CropToLungBox,
    CropToLungBoxd,
    PasteFromLungBox,
    PasteFromLungBoxd,
    crop_to_box,
    lung_box,
    paste_from_box,
)
from covseg.transforms.edges import EdgeMap, EdgeMapd, edge_map
from covseg.transforms.intensity import SEMISEG_WINDOW, WindowHU, WindowHUd, window_hu
from covseg.transforms.lung import LEFT_LUNG, RIGHT_LUNG, LungMask, LungMaskd, lung_mask

__all__ = [
    "DEFAULT_MARGIN_PX",
    "LEFT_LUNG",
    "RIGHT_LUNG",
    "SEMISEG_WINDOW",
    "Box",
    "CropToLungBox",
    "CropToLungBoxd",
    "EdgeMap",
    "EdgeMapd",
    "LungMask",
    "LungMaskd",
    "PasteFromLungBox",
    "PasteFromLungBoxd",
    "WindowHU",
    "WindowHUd",
    "crop_to_box",
    "edge_map",
    "lung_box",
    "lung_mask",
    "paste_from_box",
    "window_hu",
]
