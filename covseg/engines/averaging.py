"""Weight averaging of snapshots from the end of one run (stochastic weight averaging without the extra epochs).

Snapshots may be weight files (state dicts) or ignite checkpoints holding a ``network`` entry. Floating tensors
are averaged (batch-norm running statistics included); integer buffers (e.g. ``num_batches_tracked``) are taken
from the last snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from covseg.io.atomic import atomic_path


def read_state(path: str | Path) -> dict[str, Tensor]:
    """The network state dict stored in ``path`` (a weights file or a checkpoint with a ``network`` entry)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "network" in state and isinstance(state["network"], dict):
        state = state["network"]
    return state


def average_states(states: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Element-wise mean of state dicts with identical keys and shapes."""
    if not states:
        raise ValueError("nothing to average: no snapshots given")
    keys = list(states[0])
    for i, state in enumerate(states[1:], start=1):
        if list(state) != keys:
            raise ValueError(f"snapshot {i} has different parameters from snapshot 0")
    averaged = {}
    for key in keys:
        tensors = [s[key] for s in states]
        if tensors[0].is_floating_point():
            averaged[key] = torch.stack([t.float() for t in tensors]).mean(0).to(tensors[0].dtype)
        else:
            averaged[key] = tensors[-1].clone()
    return averaged


def average_weights(paths: Sequence[str | Path], out: str | Path) -> Path:
    """Average the snapshots in ``paths`` and save the state dict to ``out`` (atomically)."""
    state = average_states([read_state(p) for p in paths])
    with atomic_path(out) as tmp:
        torch.save(state, tmp)
    return Path(out)
