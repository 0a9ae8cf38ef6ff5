"""SaveGreyMapd: a predicted (1, h, w) logit map written as an 8-bit PNG at its slice's own size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from covseg.transforms.save import SaveGreyMapd


def test_writes_the_sigmoid_map_at_the_slice_size(tmp_path):
    logits = torch.zeros(1, 4, 4)
    logits[0, :2] = 10.0  # top half certain, bottom half p = 0.5
    out = SaveGreyMapd(keys="pred", output_dir=tmp_path)({"pred": logits, "name": "slice7", "size": [8, 6]})
    with Image.open(tmp_path / "slice7.png") as img:
        assert img.size == (6, 8) and img.mode == "L"  # PIL: (W, H)
        grey = np.asarray(img)
    assert out["pred_path"] == str(tmp_path / "slice7.png")
    assert grey[0, 0] == 255 and grey[-1, -1] == 128


def test_rejects_a_map_with_several_channels(tmp_path):
    with pytest.raises(ValueError, match="slice1"):
        SaveGreyMapd(keys="pred", output_dir=tmp_path)({"pred": torch.zeros(2, 4, 4), "name": "slice1", "size": [4, 4]})
    assert not list(tmp_path.iterdir())
