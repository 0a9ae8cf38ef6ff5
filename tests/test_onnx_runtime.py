"""The ONNX Runtime backend: same logits as torch, dynamic batch, export cache, and the CLI option."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn
from utils import TINY_UNET, assert_masks_agree, patch_load_model, require, use_tiny_default_model

from covseg.cli.main import main
from covseg.engines.inference.predictor import SlicePredictor
from covseg.engines.runtime import onnx_runtime
from covseg.engines.runtime.onnx_runtime import (
    OnnxRuntimeNetwork,
    TraceRefused,
    backend_network,
    network_key,
    onnx_runtime_network,
    resolve_backend,
)
from covseg.networks import loading
from covseg.networks.registry import get_network

require("onnxruntime", reason="the onnx extra is not installed (pip install 'covseg[onnx]')")
require("onnxscript", reason="the onnx extra is not installed (pip install 'covseg[onnx]')")

pytestmark = pytest.mark.usefixtures("one_torch_thread")



class TwoHeads(nn.Module):
    """A small network with a structured output (side map, final map) like Inf-Net's."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU())
        self.side = nn.Conv2d(6, 1, 1)
        self.final = nn.Conv2d(6, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.side(h), self.final(h) + 0.5 * self.side(h)


def test_logits_match_torch_for_any_batch(tmp_path):
    torch.manual_seed(0)
    net = TwoHeads().eval()
    ort_net = onnx_runtime_network(net, image_size=32, cache=tmp_path)
    assert isinstance(ort_net, OnnxRuntimeNetwork)
    for batch in (1, 3, 8):
        x = torch.rand(batch, 1, 32, 32)
        with torch.no_grad():
            expected = net(x)[-1]
        got = ort_net(x)
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-4), float((got - expected).abs().max())


def test_predictor_masks_equal_with_either_backend(tmp_path):
    net = get_network("unet", features=TINY_UNET).eval()
    rng = np.random.default_rng(1)
    slices = [rng.random((40, 36), dtype=np.float32) for _ in range(5)]
    by_torch = SlicePredictor(net, image_size=32, batch_size=2, bf16=False).predict(slices)
    by_ort = SlicePredictor(onnx_runtime_network(net, image_size=32, cache=tmp_path), image_size=32,
                            batch_size=2, bf16=False).predict(slices)
    for a, b in zip(by_torch, by_ort):
        assert a.shape == b.shape == (1, 40, 36)
        assert np.abs(a - b).max() < 1e-4


def test_export_is_cached_by_weights(tmp_path, monkeypatch):
    torch.manual_seed(0)
    net = TwoHeads().eval()
    onnx_runtime_network(net, image_size=32, cache=tmp_path)
    files = list(tmp_path.glob("*.onnx"))
    assert len(files) == 1 and not list(tmp_path.glob(".tmp-*"))

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds this network")

    monkeypatch.setattr(onnx_runtime, "export_onnx", no_export)
    onnx_runtime_network(net, image_size=32, cache=tmp_path)  # same weights: from the cache
    key = network_key(net, 32)
    with torch.no_grad():
        net.final.bias.add_(1.0)
    assert network_key(net, 32) != key  # other weights: another file
    assert network_key(net, 48) != network_key(net, 32)


def test_export_key_follows_settings_that_change_the_graph_but_not_the_weights():
    from covseg.networks.multiclass import PriorGuidedSegmenter

    torch.manual_seed(0)
    prior, head = nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(2, 3, 3, padding=1)
    keys = {network_key(PriorGuidedSegmenter(prior, head, merge_below=m, flip_average=f).eval(), 32)
            for m in (0.0, 0.3) for f in (False, True)}
    assert len(keys) == 4
    same = nn.Conv2d(1, 1, 3, padding=1)
    other = nn.Conv2d(1, 1, 3, padding=2)
    other.load_state_dict(same.state_dict())
    assert network_key(same, 32) != network_key(other, 32)
    assert network_key(same.eval(), 32) == network_key(same.train(), 32)


def test_cli_backend_option(tmp_path, monkeypatch, capsys):
    use_tiny_default_model(monkeypatch)
    monkeypatch.setenv("COVSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COVSEG_PRECISION", "fp32")  # like with like: ONNX Runtime runs fp32, so torch does too
    masks = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / backend
        assert main(["demo", "--out", str(out), "--phantom-shape", "8,48,48", "--no-progress",
                     "--backend", backend]) == 0
        report = json.loads((out / "phantom" / "report.json").read_text())
        assert report["model"]["backend"] == backend and report["model"]["precision"] == "fp32"
        summary = json.loads((out / "summary.json").read_text())
        assert summary["model"]["backend"] == backend and summary["model"]["precision"] == "fp32"
        masks[backend] = np.asarray(nib.load(out / "phantom" / "infection_mask.nii.gz").dataobj)
        exported = "exporting the network to ONNX once" in capsys.readouterr().err
        assert exported == (backend == "onnxruntime")  # the user is told why the first run waits
    assert list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    # Both fp32, but oneDNN and ONNX Runtime sum in different orders: a voxel whose probability sits on 0.5 may
    # flip on some CPU (a combined run under load saw one), so allow 0.1 % of voxels.
    assert_masks_agree(masks["torch"], masks["onnxruntime"], max_flip_fraction=1e-3)


class NotExportable(nn.Module):
    """Data-dependent Python control flow, which torch.export cannot capture."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y if float(y.mean()) > 0 else -y


def test_export_failure_is_one_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match=r"NotExportable could not be exported to ONNX .*use --backend torch"):
        onnx_runtime_network(NotExportable().eval(), image_size=16, cache=tmp_path)
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".tmp-*"))


def test_unreadable_cached_file_is_one_clear_error(tmp_path):
    net = TwoHeads().eval()
    (tmp_path / f"{network_key(net, 16)}.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(RuntimeError, match=r"ONNX Runtime cannot load it .*delete the file"):
        onnx_runtime_network(net, image_size=16, cache=tmp_path)


def test_export_leaves_the_network_as_it_was(tmp_path):
    net = TwoHeads().train()
    onnx_runtime_network(net, image_size=16, cache=tmp_path)
    assert net.training


def test_cli_backend_on_cuda_is_one_line_error(tmp_path, capsys):
    code = main(["infer", str(tmp_path / "ct.nii.gz"), "--out", str(tmp_path / "x"), "--backend", "onnxruntime",
                 "--device", "cuda", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert err.startswith("error: --backend onnxruntime") and "\n" not in err


def test_the_fast_exporter_traces_plain_networks_and_refuses_value_dependent_ones(tmp_path, monkeypatch):
    """The tracing exporter alone (the slow one disabled): a plain network exports with a dynamic batch; a network
    whose steps depend on its input's values is refused, not frozen into a graph that is wrong for other inputs."""

    def no_dynamo(*args, **kwargs):
        raise AssertionError("the torch.export exporter ran")

    monkeypatch.setattr(onnx_runtime, "_export_dynamo", no_dynamo)
    torch.manual_seed(0)
    net = TwoHeads().eval()
    ort_net = onnx_runtime_network(net, image_size=24, cache=tmp_path / "plain")
    x = torch.rand(5, 1, 24, 24)
    with torch.no_grad():
        assert torch.allclose(ort_net(x), net(x)[-1], atol=1e-4)
    odd = NotExportable().eval()
    refused = tmp_path / "cache" / "onnx"
    with pytest.raises(TraceRefused, match="NotExportable"):
        onnx_runtime_network(odd, image_size=16, cache=refused, fast_only=True)
    left = sorted(p.name for p in refused.iterdir())
    assert left == [f"{network_key(odd, 16)}.refused"]  # nothing half-written; the refusal remembered

    def no_trace(*args, **kwargs):
        raise AssertionError("traced again")

    monkeypatch.setattr(onnx_runtime, "_export_traced", no_trace)
    with pytest.raises(TraceRefused, match="refused before"):
        onnx_runtime_network(odd, image_size=16, cache=refused, fast_only=True)
    monkeypatch.setenv("COVSEG_CACHE", str(tmp_path / "cache"))  # auto uses the default cache: the same folder
    reasons: list[str] = []
    assert backend_network(odd, "auto", 16, precision="fp32", on_torch=reasons.append) is odd  # stays on torch
    assert len(reasons) == 1 and "refused before" in reasons[0]  # the CLI's note gets the reason


def test_backend_auto_picks_onnx_runtime_only_for_trained_fp32_cpu_runs(monkeypatch):
    monkeypatch.delenv("COVSEG_PRECISION", raising=False)
    assert resolve_backend("torch", precision="fp32") == "torch"
    assert resolve_backend("onnxruntime", precision="bf16") == "onnxruntime"  # explicit wins (it runs fp32)
    assert resolve_backend("auto", precision="fp32") == "onnxruntime"
    assert resolve_backend("auto", precision=True) == "torch"  # bf16 asked for: only torch runs it
    assert resolve_backend("auto", precision="fp32", compiled="true") == "torch"
    assert resolve_backend("auto", precision="fp32", trained=False) == "torch"
    assert resolve_backend("auto", device="cuda", precision="fp32") == "torch"
    monkeypatch.setenv("COVSEG_PRECISION", "bf16")
    assert resolve_backend("auto") == "torch"
    monkeypatch.setenv("COVSEG_PRECISION", "fp32")
    assert resolve_backend("auto") == "onnxruntime"
    monkeypatch.setattr(onnx_runtime, "onnx_runtime_installed", lambda: False)
    assert resolve_backend("auto") == "torch"
    with pytest.raises(ValueError, match="backend must be one of auto, torch, onnxruntime"):
        resolve_backend("tensorrt")


@pytest.mark.parametrize("precision,expected", [("fp32", "onnxruntime"), ("bf16", "torch")])
def test_cli_default_backend_follows_the_precision_for_trained_weights(tmp_path, monkeypatch, precision, expected):
    net = TwoHeads().eval()  # traceable (MONAI's U-Net compares traced shapes, which the fast exporter refuses)
    patch_load_model(monkeypatch, lambda model=None, bundle=None, device="cpu":
                     loading.LoadedModel(net, name="two-heads", image_size=32, trained=True))
    monkeypatch.setenv("COVSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COVSEG_PRECISION", precision)
    out = tmp_path / "out"
    assert main(["demo", "--out", str(out), "--phantom-shape", "6,48,48", "--no-progress"]) == 0
    report = json.loads((out / "phantom" / "report.json").read_text())
    assert report["model"]["backend"] == expected and report["model"]["precision"] == precision
    assert bool(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == (expected == "onnxruntime")


def test_the_fast_exporter_takes_the_multi_class_chain(tmp_path, monkeypatch):
    """The multi-class chain (binary map resized to the head, a MONAI BasicUNet head with instance norms, flip
    averaging, the small-class merge) is traced: its tracer warnings come from shape checks only. ONNX Runtime then
    gives torch's class logits, with the merge, at any batch size, and says that the chain flip-averages."""
    from covseg.networks.multiclass import PriorGuidedSegmenter, multiclass_unet

    def no_dynamo(*args, **kwargs):
        raise AssertionError("the torch.export exporter ran")

    monkeypatch.setattr(onnx_runtime, "_export_dynamo", no_dynamo)
    torch.manual_seed(0)
    prior = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))
    head = multiclass_unet(features=(4, 4, 8, 8, 16, 4), prior_residual=True)
    chain = PriorGuidedSegmenter(prior, head, prior_size=40, merge_below=0.3, flip_average=True).eval()
    runtime = onnx_runtime_network(chain, image_size=32, cache=tmp_path, fast_only=True)
    assert runtime.flip_average is True
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        want = chain(x)
    got = runtime(x)
    assert torch.allclose(got, want, atol=1e-3)
    assert torch.equal(got.argmax(1), want.argmax(1))
    assert torch.allclose(runtime(x[:1]), want[:1], atol=1e-3)
