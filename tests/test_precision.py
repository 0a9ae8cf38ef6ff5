"""Precision: $COVSEG_PRECISION forces what "auto" means; reports record precision and backend; mask agreement."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from utils import assert_masks_agree

from covseg.engines.inference.batch import run_batch
from covseg.engines.inference.predictor_setup import as_predictor
from covseg.engines.runtime.cpu import PRECISION_ENV, bf16_fast, resolve_bf16
from covseg.synthetic.phantom import make_chest_phantom
from covseg.synthetic.phantom_nifti import write_phantom

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Scaled(nn.Module):
    """A 3x3 mean filter then ``8 * (mean - 0.5)``: a convolution, so bf16 autocast really changes its arithmetic."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.fill_(8.0 / 9.0)
            self.conv.bias.fill_(-4.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.mark.parametrize(("env", "expected"), [("fp32", False), ("bf16", True), ("FP32", False)])
def test_env_forces_what_auto_means(monkeypatch, env, expected):
    monkeypatch.setenv(PRECISION_ENV, env)
    assert resolve_bf16("auto") is expected
    assert resolve_bf16(False) is False and resolve_bf16(True) is True  # explicit settings win


def test_env_auto_or_unset_follows_the_cpu(monkeypatch):
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    assert resolve_bf16("auto") is bf16_fast("cpu")
    monkeypatch.setenv(PRECISION_ENV, "auto")
    assert resolve_bf16("auto") is bf16_fast("cpu")
    assert resolve_bf16("fp32") is False and resolve_bf16("bf16") is True


@pytest.mark.parametrize("cap", ["AVX2", "avx512_core", "AVX2_VNNI"])
def test_onednn_capped_below_bf16_means_no_native_bf16(monkeypatch, cap):
    """An ISA cap (how the AVX2-only path is measured on a newer CPU) turns auto bf16 off like an AVX2 CPU would."""
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert bf16_fast("cpu") is False and resolve_bf16("auto") is False
    assert resolve_bf16(True) is True  # an explicit setting still wins
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "ALL")
    assert bf16_fast("cpu") is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def test_bad_env_value_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(PRECISION_ENV, "fp16")
    with pytest.raises(ValueError, match=r"COVSEG_PRECISION='fp16'"):
        resolve_bf16("auto")


def test_assert_masks_agree_states_its_tolerance():
    a = np.zeros((10, 10, 10), np.uint8)
    b = a.copy()
    b[0, 0, :3] = 1  # 3 of 1000 voxels flipped
    assert assert_masks_agree(a, b, max_flip_fraction=0.003) == pytest.approx(0.003)
    with pytest.raises(AssertionError, match="3 of 1000 voxels differ"):
        assert_masks_agree(a, b, max_flip_fraction=0.002)
    with pytest.raises(AssertionError, match="shapes differ"):
        assert_masks_agree(a, b[:-1], max_flip_fraction=1.0)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_report_records_precision_and_backend(tmp_path, monkeypatch, precision):
    monkeypatch.setenv(PRECISION_ENV, precision)
    ct = write_phantom(tmp_path / "in" / "p.nii.gz", make_chest_phantom(shape=(6, 48, 48), spacing=(7.0, 7.0, 12.0),
                                                                         seed=2))["ct"]
    [result] = run_batch([ct], tmp_path / "out", Scaled(), image_size=32, batch_size=4)
    assert result.ok, result.error
    report = json.loads((tmp_path / "out" / "p" / "report.json").read_text())
    assert report["model"]["precision"] == precision and report["model"]["backend"] == "torch"
    _, info = as_predictor(Scaled(), image_size=32, bf16=False)
    assert info["precision"] == "fp32"


def test_bf16_and_fp32_masks_agree_within_the_stated_tolerance(monkeypatch):
    """The same slices through a smooth network in both precisions: few flips, only near the threshold."""
    phantom = make_chest_phantom(shape=(6, 64, 64), spacing=(5.6, 5.6, 10.0), seed=4)
    vol = phantom.as_volume("p")
    from covseg.engines.inference.volume import infer_volume

    masks = {}
    for precision in ("fp32", "bf16"):
        predictor, _ = as_predictor(Scaled(), image_size=32, bf16=precision)
        masks[precision] = infer_volume(vol, predictor).infection
    assert masks["fp32"].any()
    assert_masks_agree(masks["bf16"], masks["fp32"], max_flip_fraction=1e-2)
