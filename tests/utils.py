"""Assertions and small test inputs shared by tests."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"
INFNET_BUNDLE = BUNDLES / "infnet"
INFNET_TRAIN = str(INFNET_BUNDLE / "configs" / "train.yaml")
TINY_RUN = ["--train_limit", "4", "--image_size", "64", "--batch_size", "2", "--val_interval", "1"]
"""Overrides that make a bundle's training run a smoke run: 4 slices at 64², validation every epoch."""
TINY_UNET = (4, 4, 8, 8, 16, 4)
"""U-Net ``features`` of the tiny networks of the tests (outputs and geometry are tested, not accuracy)."""
PUBLISHED_INFNET = {
    "meanDic": 0.682, "meanSen": 0.692, "meanSpe": 0.943, "Sm": 0.781, "meanEm": 0.838, "MAE": 0.082,
    "adpDice": 0.727, "adpEm": 0.885, "adpIoU": 0.571, "adpPre": 0.689, "adpSen": 0.808, "adpSpe": 0.953,
    "maxDic": 0.746, "maxEm": 0.916,
}
"""The authors' toolbox on their own Inf-Net test maps (README of COVID-SemiSeg); the first six are the paper's."""


def require(module: str, reason: str | None = None):
    """``module``, imported; the test is skipped only when its distribution is not installed at all.

    Unlike ``pytest.importorskip``, which also skips on a ``ModuleNotFoundError`` raised *inside* an installed
    package (a missing shim, a broken dependency), an import that fails here fails the test."""
    import importlib
    import importlib.util

    import pytest

    if importlib.util.find_spec(module.partition(".")[0]) is None:
        pytest.skip(reason or f"{module} is not installed", allow_module_level=True)
    return importlib.import_module(module)


def run_python(code: str, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    """``python -c code args...`` in a fresh interpreter at the repository root (what a process imports)."""
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)


def python_output(code: str, *args: str) -> str:
    """The stdout of ``python -c code args...`` in a fresh interpreter (``code`` may be indented as a whole),
    asserting that it succeeded."""
    done = run_python(textwrap.dedent(code), *args)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def run_ok(args: list[str], env_extra: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``args`` from the repository root with one OpenMP thread; fail the test with the output tails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def monai_bundle_run(bundle: Path, run_id: str, config: str, *overrides: str) -> list[str]:
    """``python -m monai.bundle run RUN_ID --config_file CONFIG --bundle_root BUNDLE`` with overrides; ``config`` is
    a file name in ``BUNDLE/configs`` or a path (or MONAI's list of paths)."""
    config = config if ("/" in config or os.sep in config) else str(bundle / "configs" / config)
    return [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", config, "--bundle_root",
            str(bundle), *overrides]


bundle_cmd = partial(monai_bundle_run, INFNET_BUNDLE)
""":func:`monai_bundle_run` for the Inf-Net bundle."""


def verify_metadata(meta_file: Path, schema: Path = BUNDLES / "schema" / "meta_schema.json") \
        -> subprocess.CompletedProcess:
    """``python -m monai.bundle verify_metadata`` of ``meta_file`` against the schema in bundles/schema (offline)."""
    return subprocess.run([sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", str(meta_file),
                           "--filepath", str(schema)], capture_output=True, text=True, timeout=300)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1 when both are empty)."""
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def sitk_geometry(img) -> tuple:
    """Size, spacing, origin and direction of a SimpleITK image."""
    return img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection()


def assert_masks_agree(a: np.ndarray, b: np.ndarray, max_flip_fraction: float) -> float:
    """Assert two binary masks have the same shape and differ in at most ``max_flip_fraction`` of their voxels.

    For masks computed at different precisions (bf16 vs fp32 logits), where voxels whose probability lies near
    the threshold may flip; like-with-like comparisons use exact equality instead. Returns the flipped fraction.
    """
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    assert a.shape == b.shape, f"mask shapes differ: {a.shape} vs {b.shape}"
    flipped = int(np.count_nonzero(a != b))
    fraction = flipped / max(a.size, 1)
    assert fraction <= max_flip_fraction, (f"{flipped} of {a.size} voxels differ ({fraction:.2e} > "
                                           f"{max_flip_fraction:.2e})")
    return fraction


def tiny_unet(seed: int = 0):
    """A tiny untrained U-Net (tests check outputs and geometry, not accuracy)."""
    from covseg.networks.registry import get_network

    with torch.random.fork_rng():
        torch.manual_seed(seed)  # a fixed draw: tests that count marked slices must not depend on the run
        return get_network("unet", features=TINY_UNET).eval()


def use_tiny_default_model(monkeypatch, meta: dict | None = None):
    """Make a tiny untrained U-Net at 32x32 the model that ``covseg.networks.loading.load_model`` returns."""
    from covseg.networks import loading

    net = tiny_unet()
    extra = {} if meta is None else {"meta": meta}
    patch_load_model(monkeypatch, lambda model=None, bundle=None, device="cpu":
                     loading.LoadedModel(net, name="tiny-unet", image_size=32, **extra))
    return net


def patch_load_model(monkeypatch, load_model) -> None:
    """Make ``load_model`` what every CLI loads: ``covseg.networks.loading.load_model``, with the shortcut that opens
    a bundle's cached ONNX export or its ONNX template without loading it (``covseg.engines.runtime.backend_model``)
    turned off."""
    from covseg.engines.runtime import backend_model
    from covseg.networks import loading

    monkeypatch.setattr(loading, "load_model", load_model)
    monkeypatch.setattr(backend_model, "_without_building", lambda *args, **kwargs: None)


def bright_square_slices(folder: Path, count: int, size: int = 48) -> list[dict]:
    """``count`` 8-bit PNG slices: a bright square (the 'infection') on a dark background, one size each."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(count):
        img = np.full((size, size + i), 40, np.uint8)
        img[10:20 + i, 5:25] = 220
        path = folder / f"s{i}.png"
        Image.fromarray(img).save(path)
        items.append({"name": path.stem, "image": str(path)})
    return items


def with_running_stats(network: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine terms, so folding has something to get wrong."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in network.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return network.eval()


CONV_BUNDLE_CONFIG = """\
covseg:
  network: conv
  image_size: 24
  out_channels: 1
network_def:
  _target_: torch.nn.Conv2d
  in_channels: 1
  out_channels: 1
  kernel_size: 3
  padding: {padding}
"""
"""The inference config of :func:`conv_bundle` (``padding`` to fill in)."""


def conv_bundle(root: Path, seed: int = 0, padding: int = 1) -> tuple[Path, torch.nn.Module]:
    """A bundle of one 3x3 convolution at 24² (configs/inference.yaml, models/model.pt) and that convolution."""
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir(exist_ok=True)
    (root / "configs" / "inference.yaml").write_text(CONV_BUNDLE_CONFIG.format(padding=padding))
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(1, 1, 3, padding=padding)
    torch.save(conv.state_dict(), root / "models" / "model.pt")
    return root, conv.eval()


def no_build(*args, **kwargs):
    """A stand-in for ``covseg.networks.loading.load_model`` where building the torch network is a failure."""
    raise AssertionError("the torch network was built")
