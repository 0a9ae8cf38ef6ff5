"""``torch.compile`` on request: same maps as eager, one input shape (a short last batch is padded), reported."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn
from utils import assert_masks_agree, use_tiny_default_model

from covseg.cli.main import main
from covseg.engines.predictor import SlicePredictor

needs_compiler = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                    reason="torch.compile on CPU needs a C++ compiler (g++), none on PATH")


def _small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 1, 3, padding=1)).eval()


@needs_compiler
def test_compiled_predictor_matches_eager_and_pads_the_last_batch(monkeypatch):
    net = _small_net()
    images = [np.random.default_rng(k).random((20 + k, 28), dtype=np.float32) for k in range(5)]
    eager = SlicePredictor(net, image_size=32, batch_size=2, bf16=False)
    compiled = SlicePredictor(net, image_size=32, batch_size=2, bf16=False, compiled=True)
    shapes = []
    forward = compiled._module.forward
    monkeypatch.setattr(compiled._module, "forward", lambda x: shapes.append(tuple(x.shape)) or forward(x))
    out = compiled.predict(images)
    assert shapes == [(2, 1, 32, 32)] * 3  # 5 slices: 2 + 2 + 1 padded to 2, one input shape
    assert [o.shape for o in out] == [(1, s.shape[0], s.shape[1]) for s in images]
    for a, b in zip(out, eager.predict(images)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_compiled_needs_a_fixed_image_size():
    with pytest.raises(ValueError, match="fixed image_size"):
        SlicePredictor(_small_net(), image_size=None, compiled=True)


@needs_compiler
def test_cli_compile_option_is_recorded(tmp_path, monkeypatch):
    use_tiny_default_model(monkeypatch)
    monkeypatch.setenv("COVSEG_PRECISION", "fp32")
    masks = {}
    for flag in ([], ["--compile"]):
        out = tmp_path / ("compiled" if flag else "eager")
        assert main(["demo", "--out", str(out), "--phantom-shape", "8,48,48", "--no-progress", *flag]) == 0
        report = json.loads((out / "phantom" / "report.json").read_text())
        assert report["model"]["compiled"] is bool(flag)
        masks[bool(flag)] = np.asarray(nib.load(out / "phantom" / "infection_mask.nii.gz").dataobj)
    # both fp32; inductor's fused kernels may round differently from eager, so a voxel on 0.5 may flip
    assert_masks_agree(masks[True], masks[False], max_flip_fraction=1e-3)


def test_cli_compile_refuses_onnxruntime(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path / "o"), "--phantom-shape", "8,48,48", "--no-progress",
                 "--compile", "--backend", "onnxruntime"])
    assert code == 2
    assert "--compile" in capsys.readouterr().err
