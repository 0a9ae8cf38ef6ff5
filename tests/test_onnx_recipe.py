"""A bundle's cached ONNX export opened from its recipe, without building the torch network; any change to what the
export was made from (weights, network_def, input size) misses and builds the network again."""

from __future__ import annotations

import json

import pytest
import torch
from utils import CONV_BUNDLE_CONFIG, conv_bundle, no_build, require

from covseg.engines.runtime import onnx_recipe
from covseg.engines.runtime.backend_model import load_backend_model
from covseg.engines.runtime.onnx_runtime import OnnxRuntimeNetwork
from covseg.networks import loading

require("onnxruntime", reason="the onnx extra is not installed (pip install 'covseg[onnx]')")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIG = CONV_BUNDLE_CONFIG
_bundle = conv_bundle
_no_build = no_build


def _load(bundle, **kwargs):
    return load_backend_model(bundle=bundle, backend="onnxruntime", **kwargs)


def test_the_second_run_opens_the_export_without_building_the_network(tmp_path, monkeypatch):
    monkeypatch.setenv("COVSEG_CACHE", str(tmp_path / "cache"))
    bundle, conv = _bundle(tmp_path / "bundle")
    first = _load(bundle)
    assert isinstance(first.network, OnnxRuntimeNetwork)
    recipes = list((tmp_path / "cache" / "onnx" / "recipes").glob("*.json"))
    assert len(recipes) == 1 and json.loads(recipes[0].read_text())["onnx"] == first.network.onnx_path.name
    monkeypatch.setattr(loading, "load_model", _no_build)
    second = _load(bundle)
    assert isinstance(second.network, OnnxRuntimeNetwork) and second.network.onnx_path == first.network.onnx_path
    assert (second.name, second.image_size, second.out_channels, second.trained) == ("conv", 24, 1, True)
    x = torch.rand(2, 1, 24, 24)
    with torch.no_grad():
        assert torch.allclose(second.network(x), conv(x), atol=1e-5)


@pytest.mark.parametrize("change", ["weights", "network_def", "image_size", "export deleted"])
def test_a_changed_recipe_builds_the_network_again(tmp_path, monkeypatch, change):
    monkeypatch.setenv("COVSEG_CACHE", str(tmp_path / "cache"))
    bundle, conv = _bundle(tmp_path / "bundle")
    first = _load(bundle)
    size = None
    if change == "weights":
        bundle, conv = _bundle(bundle, seed=1)
    elif change == "network_def":
        bundle, conv = _bundle(bundle, padding=0)
    elif change == "image_size":
        size = 16
    else:
        first.network.onnx_path.unlink()
    built = []
    real = loading.load_model
    monkeypatch.setattr(loading, "load_model", lambda **kwargs: built.append(1) or real(**kwargs))
    again = _load(bundle, image_size=size)
    assert built == [1] and isinstance(again.network, OnnxRuntimeNetwork)
    x = torch.rand(1, 1, size or 24, size or 24)
    with torch.no_grad():
        assert torch.allclose(again.network(x), conv(x), atol=1e-5)
    monkeypatch.setattr(loading, "load_model", _no_build)  # remembered under the new recipe
    assert _load(bundle, image_size=size).network.onnx_path == again.network.onnx_path


def test_torch_runs_never_use_a_recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("COVSEG_CACHE", str(tmp_path / "cache"))
    bundle, _ = _bundle(tmp_path / "bundle")
    _load(bundle)
    on_torch = load_backend_model(bundle=bundle, backend="torch")
    assert isinstance(on_torch.network, torch.nn.Conv2d)
    assert onnx_recipe.recipe_key(bundle, 24) != onnx_recipe.recipe_key(bundle, 32)


def _chained(root, prior: str):
    """A multi-class bundle (a 2-to-3-channel convolution head) chained after the bundle at ``prior``."""
    _bundle(root)
    head = torch.nn.Conv2d(2, 3, 3, padding=1)
    torch.save(head.state_dict(), root / "models" / "model.pt")
    config = CONFIG.format(padding=1).replace("in_channels: 1\n  out_channels: 1", "in_channels: 2\n  out_channels: 3")
    config = config.replace("out_channels: 1\n", "out_channels: 3\n  flip_average: true\n  merge_below: 0.2\n"
                            f"  prior_bundle: {prior}\n", 1)
    (root / "configs" / "inference.yaml").write_text(config)
    (root / "configs" / "metadata.json").write_text(json.dumps({"version": "9.9"}))
    return root


def test_a_chained_bundle_opens_its_export_and_follows_its_prior_bundle(tmp_path, monkeypatch):
    monkeypatch.setenv("COVSEG_CACHE", str(tmp_path / "cache"))
    _bundle(tmp_path / "binary")
    (tmp_path / "binary" / "configs" / "metadata.json").write_text(json.dumps({"version": "1.2"}))
    chained = _chained(tmp_path / "multi", "../binary")
    built = loading.load_bundle(chained)
    first = _load(chained)
    assert isinstance(first.network, OnnxRuntimeNetwork)
    real = loading.load_model
    monkeypatch.setattr(loading, "load_model", _no_build)
    second = _load(chained)
    assert second.network.onnx_path == first.network.onnx_path and second.network.flip_average is True
    assert (second.out_channels, second.meta["prior_version"], second.meta["version"]) == (3, "1.2", "9.9")
    x = torch.rand(2, 1, 24, 24)
    with torch.no_grad():
        assert torch.allclose(second.network(x), built.network(x), atol=1e-4)
    _bundle(tmp_path / "binary", seed=3)  # the prior bundle's weights change: the chain's recipe changes
    monkeypatch.setattr(loading, "load_model", real)
    assert _load(chained).network.onnx_path != first.network.onnx_path


def test_a_model_not_loaded_from_the_bundle_is_not_remembered_as_its_export(tmp_path, monkeypatch):
    """A loader replaced in memory (a test's tiny network) must never become the bundle's recipe."""
    monkeypatch.setenv("COVSEG_CACHE", str(tmp_path / "cache"))
    bundle, _ = _bundle(tmp_path / "bundle")
    other = torch.nn.Conv2d(1, 1, 3, padding=1).eval()
    monkeypatch.setattr(loading, "load_model", lambda **kwargs: loading.LoadedModel(other, "other", 24, trained=True))
    assert isinstance(_load(bundle).network, OnnxRuntimeNetwork)
    assert not (tmp_path / "cache" / "onnx" / "recipes").exists()


def test_other_weights_are_not_remembered_as_the_bundle_s_export(tmp_path, monkeypatch):
    """``covseg infer --weights RUN/checkpoint.pt`` on ONNX Runtime wrote its export into the bundle's recipe: every
    later run of the bundle (``infer``, ``diagnose``'s segmenter) opened the checkpoint's network instead of the
    bundle's (chest-2slice 100 % infected instead of 6.77 % after a run of a hot checkpoint)."""
    monkeypatch.setenv("COVSEG_CACHE", str(tmp_path / "cache"))
    bundle, conv = _bundle(tmp_path / "bundle")
    hot = torch.nn.Conv2d(1, 1, 3, padding=1)
    torch.nn.init.constant_(hot.bias, 20.0)
    torch.save({"network": hot.state_dict()}, tmp_path / "checkpoint.pt")
    assert isinstance(_load(bundle, weights=tmp_path / "checkpoint.pt").network, OnnxRuntimeNetwork)
    own = _load(bundle)
    x = torch.rand(2, 1, 24, 24)
    with torch.no_grad():
        assert torch.allclose(own.network(x), conv(x), atol=1e-5)


def test_a_run_with_other_weights_leaves_the_bundles_recipe_alone(tmp_path, monkeypatch):
    """`covseg infer --weights RUN/model_final.pt` once wrote its export into the bundle's recipe, so every later run
    of the bundle's own weights (plain `covseg infer`) silently ran the training run's network."""
    monkeypatch.setenv("COVSEG_CACHE", str(tmp_path / "cache"))
    bundle, conv = _bundle(tmp_path / "bundle")
    _load(bundle)  # the bundle's own export, remembered under its recipe
    torch.manual_seed(7)
    run_conv = torch.nn.Conv2d(1, 1, 3, padding=1).eval()
    run_weights = tmp_path / "run" / "model_final.pt"
    run_weights.parent.mkdir()
    torch.save(run_conv.state_dict(), run_weights)
    x = torch.rand(2, 1, 24, 24)
    with torch.no_grad():
        assert torch.allclose(_load(bundle, weights=run_weights).network(x), run_conv(x), atol=1e-5)
        assert torch.allclose(_load(bundle).network(x), conv(x), atol=1e-5)


def test_recipes_of_the_earlier_format_are_not_read(tmp_path, monkeypatch):
    """A cache written before the fix above may hold a recipe naming a --weights run's export: never read it."""
    monkeypatch.setenv("COVSEG_CACHE", str(tmp_path / "cache"))
    bundle, conv = _bundle(tmp_path / "bundle")
    torch.manual_seed(7)
    run_conv = torch.nn.Conv2d(1, 1, 3, padding=1).eval()
    monkeypatch.setattr(loading, "load_model", lambda **kwargs: loading.LoadedModel(run_conv, "conv", 24, trained=True))
    stale = load_backend_model(model="conv", backend="onnxruntime").network  # an export of other weights
    monkeypatch.undo()
    monkeypatch.setenv("COVSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(onnx_recipe, "RECIPE_FORMAT", "1", raising=False)
    onnx_recipe.remember_recipe(bundle, 24, stale)  # as the earlier format wrote it
    monkeypatch.undo()
    monkeypatch.setenv("COVSEG_CACHE", str(tmp_path / "cache"))
    x = torch.rand(2, 1, 24, 24)
    with torch.no_grad():
        assert torch.allclose(_load(bundle).network(x), conv(x), atol=1e-5)
