"""A bundle's ONNX template (its export without weights) filled from its weights gives the export byte for byte; a
bundle's first ONNX Runtime run uses it instead of building and tracing the network; a template that no longer fits
the sources, the network_def or the file itself is not used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from utils import CONV_BUNDLE_CONFIG, REPO, conv_bundle, no_build, require, with_running_stats

from covseg.engines.inference.predictor import logits_of
from covseg.engines.runtime import onnx_runtime, onnx_template
from covseg.engines.runtime.backend_model import bundle_backend_network, load_backend_model
from covseg.engines.runtime.onnx_runtime import OnnxRuntimeNetwork, export_onnx
from covseg.engines.runtime.onnx_template import (
    TEMPLATE_NAME,
    bundle_state,
    fill_template,
    read_back,
    template_definition,
    template_fits,
)
from covseg.engines.runtime.onnx_template_make import make_template
from covseg.networks import loading

require("onnxruntime", reason="the onnx extra is not installed (pip install 'covseg[onnx]')")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHIPPED = sorted(p.parent.parent for p in (REPO / "bundles").glob(f"*/models/{TEMPLATE_NAME}"))


class ConvBatchNorm(nn.Module):
    """Convolutions with and without a BatchNorm after them, a linear layer and a constant buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4)
        self.conv3 = nn.Conv2d(4, 1, 1)
        self.side = nn.Conv2d(4, 1, 1)  # a side output, which the export leaves out
        self.gate = nn.Linear(4, 4)
        self.register_buffer("scale", torch.tensor(2.0), persistent=False)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = x * torch.sigmoid(self.gate(x.mean(dim=(2, 3))))[:, :, None, None]
        return self.side(x), self.conv3(x) * self.scale  # the final logits come last


class WeightInGraph(nn.Module):
    """A weight the exporter folds into a constant of its own: no template can be filled from the weights."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.gain = nn.Parameter(torch.tensor(0.3))

    def forward(self, x):
        return self.conv(x) * (self.gain * 2.0)  # the exporter folds gain x 2 into a constant


def _network(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return with_running_stats(ConvBatchNorm(), seed)


def test_a_filled_template_read_back_is_the_export_byte_for_byte(tmp_path):
    template = make_template(_network(0), 16, tmp_path / "net.onnx-template", {"net": 1})
    assert template.stat().st_size < 20_000  # the graph, not the weights
    other = _network(1)  # weights the template was not made from
    torch.save({k: v.half() for k, v in other.state_dict().items()}, tmp_path / "model.pt")
    other.load_state_dict({k: v.half().float() for k, v in other.state_dict().items()})
    filled = fill_template(template, tmp_path / "model.pt", tmp_path / "filled")
    assert sorted(p.name for p in filled.parent.iterdir()) == ["model.onnx", "weights.bin"]
    exported = export_onnx(other, tmp_path / "exported.onnx", 16)
    assert read_back(filled) == exported.read_bytes()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(OnnxRuntimeNetwork(filled)(x), logits_of(other(x)), atol=1e-5)


def test_weights_folded_into_other_constants_refuse_a_template(tmp_path):
    with pytest.raises(ValueError, match="differs from its export"):
        make_template(WeightInGraph().eval(), 16, tmp_path / "net.onnx-template", {})
    assert not (tmp_path / "net.onnx-template").exists()


def test_weights_that_do_not_fit_are_an_error(tmp_path):
    template = make_template(_network(0), 16, tmp_path / "net.onnx-template", {})
    torch.save({"conv1.weight": torch.zeros(4, 1, 5, 5)}, tmp_path / "model.pt")
    with pytest.raises(KeyError):
        fill_template(template, tmp_path / "model.pt", tmp_path / "filled")
    assert not (tmp_path / "filled").exists() or not list((tmp_path / "filled").iterdir())


@pytest.mark.parametrize("bundle", SHIPPED, ids=lambda p: p.name)
def test_the_shipped_templates_fit_the_sources_and_bundle(bundle):
    size = int(loading.bundle_meta(loading.bundle_parser(bundle), bundle).get("image_size", 352))
    reason = template_fits(bundle / "models" / TEMPLATE_NAME, size, template_definition(bundle))
    assert reason is None, f"{bundle.name}: {reason}; run: python scripts/make_onnx_templates.py"


@pytest.mark.parametrize("bundle", SHIPPED, ids=lambda p: p.name)
def test_a_shipped_template_filled_with_its_bundles_weights_is_the_bundles_export(bundle, tmp_path):
    loaded = loading.load_bundle(bundle)
    filled = fill_template(bundle / "models" / TEMPLATE_NAME, bundle_state(bundle), tmp_path / "filled")
    exported = export_onnx(loaded.network, tmp_path / "exported.onnx", loaded.image_size, fast_only=True)
    assert read_back(filled) == exported.read_bytes()


CONFIG = CONV_BUNDLE_CONFIG


def _bundle(root: Path, padding: int = 1) -> tuple[Path, nn.Module]:
    """A bundle of one convolution, with its template."""
    root, conv = conv_bundle(root, padding=padding)
    make_template(conv, 24, root / "models" / TEMPLATE_NAME, template_definition(root))
    return root, conv


_no_build = no_build


def test_the_first_run_fills_the_template_without_building_the_network(tmp_path, monkeypatch):
    monkeypatch.setenv("COVSEG_CACHE", str(tmp_path / "cache"))
    bundle, conv = _bundle(tmp_path / "bundle")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    killed = tmp_path / "cache" / "onnx" / "other-0123" / f".tmp-{dead}-0123abcd-weights.bin"  # a killed fill's
    killed.parent.mkdir(parents=True)
    killed.write_bytes(b"\0" * 1024)
    monkeypatch.setattr(loading, "load_model", _no_build)
    first = load_backend_model(bundle=bundle, backend="onnxruntime")
    assert isinstance(first.network, OnnxRuntimeNetwork) and (first.name, first.image_size) == ("conv", 24)
    recipes = list((tmp_path / "cache" / "onnx" / "recipes").glob("*.json"))
    exports = (tmp_path / "cache" / "onnx").resolve()
    assert [json.loads(r.read_text())["onnx"] for r in recipes] == [
        first.network.onnx_path.resolve().relative_to(exports).as_posix()]
    x = torch.rand(2, 1, 24, 24)
    with torch.no_grad():
        assert torch.allclose(first.network(x), conv(x), atol=1e-5)
    assert not killed.exists()
    monkeypatch.setattr(onnx_template, "fill_template", _no_build)  # the second run opens the filled export
    assert load_backend_model(bundle=bundle, backend="onnxruntime").network.onnx_path == first.network.onnx_path


def test_the_inference_configs_network_opens_the_template_instead_of_exporting(tmp_path, monkeypatch):
    """``python -m monai.bundle run inference`` builds ``network`` from the config: on an empty cache it fills the
    bundle's template, as ``covseg infer`` does, and never exports the network."""
    from monai.bundle import ConfigParser

    monkeypatch.setenv("COVSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(onnx_runtime, "onnx_runtime_network", _no_build)
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "infnet" / "configs" / "inference.yaml"))
    parser.update({"bundle_root": str(REPO / "bundles" / "infnet"), "backend": "onnxruntime", "precision": "fp32"})
    network = parser.get_parsed_content("network")
    assert isinstance(network, OnnxRuntimeNetwork)
    assert network.onnx_path.resolve().is_relative_to((tmp_path / "cache").resolve())


def test_other_weights_in_a_bundles_network_are_exported_not_filled(tmp_path, monkeypatch):
    monkeypatch.setenv("COVSEG_CACHE", str(tmp_path / "cache"))
    bundle, _ = _bundle(tmp_path / "bundle")
    torch.manual_seed(5)
    other = nn.Conv2d(1, 1, 3, padding=1).eval()
    torch.save(other.state_dict(), tmp_path / "other.pt")
    monkeypatch.setattr(onnx_template, "fill_template", _no_build)
    network = bundle_backend_network(nn.Conv2d(1, 1, 3, padding=1), tmp_path / "other.pt", bundle, "onnxruntime",
                                     24, precision="fp32")
    x = torch.rand(1, 1, 24, 24)
    with torch.no_grad():
        assert isinstance(network, OnnxRuntimeNetwork) and torch.allclose(network(x), other(x), atol=1e-5)


def test_a_weights_file_that_is_not_there_is_an_error_unless_it_is_the_bundles_own(tmp_path):
    """The untrained fallback (``trained`` False: the config's ``weights`` file is missing) is for a bundle without
    its ``models/model.pt``; a mistyped ``--weights RUN/model_final.pt`` ran the untrained network, exit 0."""
    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"runs/x/model_final\.pt: weights file not found"):
        bundle_backend_network(nn.Conv2d(1, 1, 3, padding=1), tmp_path / "runs/x/model_final.pt", bundle, "torch",
                               24, precision="fp32", trained=False)
    untrained = bundle_backend_network(nn.Conv2d(1, 1, 3, padding=1), bundle / "models" / "model.pt", bundle,
                                       "torch", 24, precision="fp32", trained=False)
    assert isinstance(untrained, nn.Module)


@pytest.mark.parametrize("change", ["network_def", "sources", "damaged"])
def test_a_template_that_does_not_fit_is_not_used(tmp_path, monkeypatch, change):
    monkeypatch.setenv("COVSEG_CACHE", str(tmp_path / "cache"))
    bundle, conv = _bundle(tmp_path / "bundle")
    if change == "network_def":
        (bundle / "configs" / "inference.yaml").write_text(CONFIG.format(padding=0))
        conv.padding = (0, 0)
    elif change == "sources":
        monkeypatch.setattr(onnx_template, "graph_sources_digest", lambda: "other sources")
    else:
        (bundle / "models" / TEMPLATE_NAME).write_bytes(b"\x08\x07not a template")
    built = []
    real = loading.load_model
    monkeypatch.setattr(loading, "load_model", lambda **kwargs: built.append(1) or real(**kwargs))
    loaded = load_backend_model(bundle=bundle, backend="onnxruntime")
    assert built == [1] and isinstance(loaded.network, OnnxRuntimeNetwork)
    assert [p.name for p in (tmp_path / "cache" / "onnx").glob("*.onnx")] == [loaded.network.onnx_path.name]
    x = torch.rand(1, 1, 24, 24)
    with torch.no_grad():
        assert torch.allclose(loaded.network(x), conv(x), atol=1e-5)


def test_a_chained_bundles_first_run_fills_the_whole_chain_from_both_bundles(tmp_path, monkeypatch):
    """A multi-class bundle's template is its chain: the binary bundle's network, four flips, the head; its weights
    come from both bundles."""
    monkeypatch.setenv("COVSEG_CACHE", str(tmp_path / "cache"))
    _bundle(tmp_path / "binary")
    chained = tmp_path / "multi"
    (chained / "configs").mkdir(parents=True)
    (chained / "models").mkdir()
    config = CONFIG.format(padding=1).replace("in_channels: 1\n  out_channels: 1", "in_channels: 2\n  out_channels: 3")
    config = config.replace("  out_channels: 1\nnetwork_def:", "  out_channels: 3\n  flip_average: true\n"
                            "  merge_below: 0.2\n  prior_bundle: ../binary\nnetwork_def:")
    (chained / "configs" / "inference.yaml").write_text(config)
    torch.manual_seed(1)
    torch.save(nn.Conv2d(2, 3, 3, padding=1).state_dict(), chained / "models" / "model.pt")
    built = loading.load_bundle(chained)
    make_template(built.network, 24, chained / "models" / TEMPLATE_NAME, template_definition(chained))
    torch.manual_seed(2)  # the binary bundle is retrained after the template was made: its new weights are used
    torch.save(nn.Conv2d(1, 1, 3, padding=1).state_dict(), tmp_path / "binary" / "models" / "model.pt")
    rebuilt = loading.load_bundle(chained).network
    monkeypatch.setattr(loading, "load_model", _no_build)
    first = load_backend_model(bundle=chained, backend="onnxruntime")
    assert isinstance(first.network, OnnxRuntimeNetwork) and first.out_channels == 3 and first.network.flip_average
    x = torch.rand(2, 1, 24, 24)
    with torch.no_grad():
        assert torch.allclose(first.network(x), rebuilt(x), atol=1e-4)
        assert not torch.allclose(first.network(x), built.network(x), atol=1e-3)
