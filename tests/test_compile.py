"""``torch.compile`` on request: same maps as eager, one input shape (a short last batch is padded), reported."""

import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn
from utils import assert_masks_agree, use_tiny_default_model

from covseg.cli.main import main
from covseg.engines.inference.predictor import SlicePredictor

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


@needs_compiler
def test_cpu_compile_freezes_and_prepacks_the_convolutions():
    """On CPU the compile freezes the weights: inductor then prepacks every convolution's weights for oneDNN (and
    fuses them with their ReLUs), which it does only with freezing on."""
    from torch._dynamo.utils import counters

    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN (mkldnn): inductor has nothing to prepack")
    torch._dynamo.reset()
    counters.clear()
    net = _small_net()
    images = [np.random.default_rng(k).random((24, 24), dtype=np.float32) for k in range(2)]
    compiled = SlicePredictor(net, image_size=32, batch_size=2, bf16=False, compiled=True)
    out = compiled.predict(images)
    assert counters["inductor"]["mkldnn_conv_weight_pack_matcher_count"] == 2  # both convolutions
    for a, b in zip(out, SlicePredictor(net, image_size=32, batch_size=2, bf16=False).predict(images)):
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


_EAGER_VS_COMPILED = """
import sys
import numpy as np
import torch
from torch import nn
from covseg.engines.inference.predictor import SlicePredictor
torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1)).eval()
images = [np.random.default_rng(k).random((20 + k, 28), dtype=np.float32) for k in range(5)]
eager = SlicePredictor(net, image_size=32, batch_size=2, bf16=False).predict(images)
compiled = SlicePredictor(net, image_size=32, batch_size=2, bf16=False, compiled=True).predict(images)
gap = max(float(np.abs(a - b).max()) for a, b in zip(eager, compiled))
print(f"max gap {gap:.3g}")
sys.exit(0 if gap < 1e-5 else 3)
"""


@needs_compiler
@pytest.mark.slow
def test_kernels_compiled_for_another_instruction_set_are_not_reused(tmp_path):
    """Processes compiling for AVX2 and for AVX-512 in turn, with inductor's default cache folder shared (one
    TMPDIR): each gets its own cache folder and eager's maps. With one shared folder, torch 2.13 reused the other
    instruction set's kernels here: heap corruption or maps off by 0.04 (docs/benchmarks.md)."""
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        pytest.skip("needs an AVX-512 CPU, where ATEN_CPU_CAPABILITY=avx2 makes inductor compile for a second "
                    f"instruction set (this CPU: {torch.backends.cpu.get_cpu_capability()})")
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "ATEN_CPU_CAPABILITY")}
    env["TMPDIR"] = str(tmp_path)
    for capability in ("avx2", None, "avx2", None):
        run_env = {**env, "ATEN_CPU_CAPABILITY": capability} if capability else env
        proc = subprocess.run([sys.executable, "-c", _EAGER_VS_COMPILED], env=run_env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, (capability, proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    folders = sorted(p.name for p in tmp_path.glob("torchinductor_*/covseg-*"))
    assert len(folders) == 2 and any("AVX2" in f for f in folders), folders


def test_a_cache_folder_the_user_chose_is_kept_and_the_default_one_is_split(monkeypatch, tmp_path):
    from covseg.engines.runtime.compile_cache import isa_tag, use_isa_cache

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert use_isa_cache() == str(tmp_path / "mine")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    folder = use_isa_cache()
    assert folder.endswith(f"covseg-{isa_tag()}") and os.environ["TORCHINDUCTOR_CACHE_DIR"] == folder
    # torch sets the variable to its default folder itself (e.g. during an ONNX export): not a user's choice
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())
    assert use_isa_cache() == folder
    assert "/" not in isa_tag() and isa_tag()


def test_compile_without_a_cpp_compiler_is_one_usage_line_before_any_work(tmp_path):
    """No C++ compiler: ``--compile`` is refused up front (exit 2, one line naming the cause), not by a failure of
    every volume at its first batch."""
    env = {**os.environ, "CXX": str(tmp_path / "no-such-g++")}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "covseg", "demo", "--out", str(out), "--phantom-shape", "8,48,48",
                           "--no-progress", "--compile"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--compile needs a working C++ compiler" in lines[0] and "no-such-g++" in lines[0]
    assert not out.exists()
