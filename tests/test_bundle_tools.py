"""MONAI's own bundle tools take every covseg bundle, as the MONAI model zoo checks its bundles: ``metadata.json``
passes ``verify_metadata`` offline (against the schema kept in bundles/schema), the network of
``configs/inference.yaml`` (``network_def``) passes ``verify_net_in_out`` at the shapes ``metadata.json`` states,
and ``ckpt_export`` (TorchScript by tracing) writes a module that loads and gives the eager network's logits, at
the traced size and at another."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from utils import BUNDLES, verify_metadata

SCHEMA = BUNDLES / "schema" / "meta_schema.json"
NAMES = ("infnet", "semi_infnet", "multiclass_infnet", "jcs_segmenter", "jcs_classifier")


def _input_channels(bundle: str) -> int:
    meta = json.loads((BUNDLES / bundle / "configs" / "metadata.json").read_text())
    return int(meta["network_data_format"]["inputs"]["image"]["num_channels"])


def _files(bundle: str) -> dict[str, str]:
    root = BUNDLES / bundle
    return {"meta_file": str(root / "configs" / "metadata.json"),
            "config_file": str(root / "configs" / "inference.yaml"), "bundle_root": str(root)}


@pytest.fixture(autouse=True)
def _quiet_monai():
    logging.getLogger("monai").setLevel(logging.ERROR)


def test_every_bundle_is_checked():
    assert sorted(NAMES) == sorted(p.parent.parent.name for p in BUNDLES.glob("*/configs/metadata.json"))


@pytest.mark.parametrize("bundle", NAMES)
def test_monai_verify_metadata_passes_offline(bundle):
    from monai.bundle import verify_metadata as monai_verify_metadata

    # in this process (the command below starts an interpreter that imports MONAI and torch, ~5 s a bundle); it
    # raises on a file the schema refuses (next test)
    monai_verify_metadata(meta_file=str(BUNDLES / bundle / "configs" / "metadata.json"), filepath=str(SCHEMA))


def test_monai_verify_metadata_fails_on_metadata_without_a_required_key(tmp_path):
    """The check above could pass on anything (a schema that is not read, a check that only logs): a file without
    ``network_data_format`` must fail it, naming the key."""
    from monai.bundle import verify_metadata as monai_verify_metadata

    broken = json.loads((BUNDLES / "infnet" / "configs" / "metadata.json").read_text())
    del broken["network_data_format"]
    bad_file = tmp_path / "metadata.json"
    bad_file.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="network_data_format"):
        monai_verify_metadata(meta_file=str(bad_file), filepath=str(SCHEMA))


def test_the_documented_verify_metadata_command_passes():
    """README's ``python -m monai.bundle verify_metadata ... --filepath bundles/schema/meta_schema.json``."""
    proc = verify_metadata(BUNDLES / "infnet" / "configs" / "metadata.json", SCHEMA)
    assert proc.returncode == 0 and "verified with no error" in proc.stdout + proc.stderr


@pytest.mark.parametrize("bundle", NAMES)
def test_the_version_is_the_newest_changelog_entry(bundle):
    """A changelog entry added without raising ``version`` (or a version without its entry) is caught here; a test
    that compared the version with a literal only echoed the file."""
    meta = json.loads((BUNDLES / bundle / "configs" / "metadata.json").read_text())
    versions = [tuple(int(part) for part in v.split(".")) for v in meta["changelog"]]
    assert versions == sorted(versions, reverse=True), f"{bundle}: changelog not newest first"
    assert meta["version"] == next(iter(meta["changelog"])), bundle


@pytest.mark.parametrize("bundle", NAMES)
def test_monai_verify_net_in_out_passes(bundle, one_torch_thread):
    from monai.bundle import verify_net_in_out

    verify_net_in_out(net_id="network_def", device="cpu", **_files(bundle))  # raises on a shape or type mismatch


@pytest.mark.parametrize("bundle", NAMES)
def test_monai_ckpt_export_traces_the_shipped_weights(bundle, tmp_path, one_torch_thread):
    from monai.bundle import ConfigParser, ckpt_export

    from covseg.networks.loading import load_weights

    root = BUNDLES / bundle
    shape = [1, _input_channels(bundle), 64, 64]
    ts_file = tmp_path / "model.ts"
    ckpt_export(net_id="network_def", filepath=str(ts_file), ckpt_file=str(root / "models" / "model.pt"),
                use_trace=True, input_shape=shape, **_files(bundle))
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.yaml"))
    parser["bundle_root"] = str(root)
    eager = load_weights(parser.get_parsed_content("network_def"), root / "models" / "model.pt").eval()
    traced = torch.jit.load(str(ts_file))
    for size in (64, 96):  # the traced size and another: the trace keeps the shape arithmetic
        x = torch.rand(*shape[:2], size, size, generator=torch.Generator().manual_seed(size))
        with torch.no_grad():
            want, got = eager(x), traced(x)
        assert isinstance(want, torch.Tensor) and got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
