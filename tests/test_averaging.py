"""Snapshot weight averaging and the WiSE-FT blend of tuned and starting weights."""

import pytest
import torch
from torch import nn

from covseg.engines.training.averaging import average_states, average_weights, blend_weights
from covseg.networks.loading import read_state


def _net(value: float) -> nn.Module:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(value)
        net[1].running_mean.fill_(value)
    net[1].num_batches_tracked.fill_(int(value))
    return net


def test_average_of_weights_files_and_checkpoints(tmp_path):
    torch.save(_net(1.0).state_dict(), tmp_path / "a.pt")
    torch.save({"network": _net(3.0).state_dict(), "optimizer": {}}, tmp_path / "checkpoint_5.pt")
    out = average_weights([tmp_path / "a.pt", tmp_path / "checkpoint_5.pt"], tmp_path / "avg.pt")
    state = read_state(out)
    assert torch.allclose(state["0.weight"], torch.full_like(state["0.weight"], 2.0))
    assert torch.allclose(state["1.running_mean"], torch.full((2,), 2.0))
    assert int(state["1.num_batches_tracked"]) == 3  # integer buffers come from the last snapshot
    net = _net(0.0)
    net.load_state_dict(state)


def test_mismatched_snapshots_are_refused():
    with pytest.raises(ValueError, match="different parameters"):
        average_states([_net(1.0).state_dict(), nn.Conv2d(1, 2, 3).state_dict()])
    with pytest.raises(ValueError, match="nothing to average"):
        average_states([])


def test_blend_weights_interpolates_in_the_tuned_weights_dtype(tmp_path):
    start = {k: v.half() if v.is_floating_point() else v for k, v in _net(1.0).state_dict().items()}
    torch.save(start, tmp_path / "start.pt")
    torch.save(_net(5.0).state_dict(), tmp_path / "tuned.pt")
    state = read_state(blend_weights(tmp_path / "start.pt", tmp_path / "tuned.pt", 0.25, tmp_path / "blend.pt"))
    assert state["0.weight"].dtype == torch.float32
    assert torch.allclose(state["0.weight"], torch.full_like(state["0.weight"], 2.0))  # 0.25 x 5 + 0.75 x 1
    assert torch.allclose(state["1.running_mean"], torch.full((2,), 2.0))
    ends = [read_state(blend_weights(tmp_path / "start.pt", tmp_path / "tuned.pt", w, tmp_path / f"{w}.pt"))
            for w in (0.0, 1.0)]
    assert torch.equal(ends[0]["0.weight"], torch.ones_like(ends[0]["0.weight"]))
    assert torch.equal(ends[1]["0.weight"], torch.full_like(ends[1]["0.weight"], 5.0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        blend_weights(tmp_path / "start.pt", tmp_path / "tuned.pt", -0.1, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="non-negative weight"):
        average_states([start, start], [1.0])
