"""covseg.transforms: MONAI-style preprocessing (plain function, array ``Transform``, dict ``...d`` transform).

- ``intensity``: HU window to the COVID-SemiSeg 8-bit look (``window_hu``, ``SEMISEG_WINDOW``); the window's
  estimator is ``window_fit``;
- ``lung``: automatic lung mask, 1 right / 2 left (``lung_mask``; numpy/scipy only, its MONAI transforms are in
  ``lung_transforms``);
- ``crop``: lung bounding box crop and its exact inverse (``lung_box``, ``crop_to_box``, ``paste_from_box``);
- ``intensity``, ``lung`` and ``crop`` import no MONAI (``covseg infer`` needs them before its first slice); their
  MONAI transforms are ``intensity_transforms``, ``lung_transforms`` and ``crop_transforms``;
- ``class_merge``: fold a class that covers too little of a slice into another (``merge_small_class``);
- ``edges``: edge map of a mask as the Inf-Net dataset derives it (``edge_map``).

The names below are imported on first use, so importing one submodule (e.g. ``covseg.transforms.lung`` in the
CLI's first reader thread) does not import the others, nor MONAI.
"""

from __future__ import annotations

from covseg.lazy import lazy_names

_HOME = {
    **dict.fromkeys(("DEFAULT_MARGIN_PX", "Box", "crop_to_box", "lung_box", "paste_from_box"), "crop"),
    **dict.fromkeys(("CropToLungBox", "CropToLungBoxd", "PasteFromLungBox", "PasteFromLungBoxd"), "crop_transforms"),
    **dict.fromkeys(("MERGED_MARGIN", "merge_small_class"), "class_merge"),
    **dict.fromkeys(("EdgeMap", "EdgeMapd", "edge_map"), "edges"),
    **dict.fromkeys(("SEMISEG_WINDOW", "rewindow", "window_hu"), "intensity"),
    **dict.fromkeys(("Rewindowd", "WindowHU", "WindowHUd"), "intensity_transforms"),
    **dict.fromkeys(("LEFT_LUNG", "RIGHT_LUNG", "lung_mask"), "lung"),
    **dict.fromkeys(("LungMask", "LungMaskd"), "lung_transforms"),
}

__all__ = sorted(_HOME)

__getattr__ = lazy_names(__name__, _HOME)
