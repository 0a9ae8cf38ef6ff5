"""Snapshot weight averaging."""

import pytest
import torch
from torch import nn

from covseg.engines.averaging import average_states, average_weights, read_state


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
