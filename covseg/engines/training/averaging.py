"""Weight averaging: snapshots from the end of one run (stochastic weight averaging without the extra epochs), and
a fine-tuned network blended with the weights it started from (weight-space ensembling, WiSE-FT: Wortsman et al.,
CVPR 2022).

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
from covseg.networks.loading import read_state


def average_states(states: Sequence[dict[str, Tensor]], weights: Sequence[float] | None = None) -> dict[str, Tensor]:
    """Element-wise weighted mean of state dicts with identical keys and shapes (``weights`` None: equal; they
    are normalised to sum to 1). Computed in fp32, returned in each tensor's dtype."""
    if not states:
        raise ValueError("nothing to average: no snapshots given")
    weights = [1.0] * len(states) if weights is None else [float(w) for w in weights]
    if len(weights) != len(states) or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"need one non-negative weight per snapshot with a positive sum, got {weights}")
    keys = list(states[0])
    for i, state in enumerate(states[1:], start=1):
        if list(state) != keys:
            raise ValueError(f"snapshot {i} has different parameters from snapshot 0")
    share = torch.tensor(weights, dtype=torch.float32) / sum(weights)
    averaged = {}
    for key in keys:
        tensors = [s[key] for s in states]
        if tensors[0].is_floating_point():
            stacked = torch.stack([t.float() for t in tensors])
            averaged[key] = torch.tensordot(share, stacked, dims=1).to(tensors[0].dtype)
        else:
            averaged[key] = tensors[-1].clone()
    return averaged


def average_weights(paths: Sequence[str | Path], out: str | Path) -> Path:
    """Average the snapshots in ``paths`` and save the state dict to ``out`` (atomically)."""
    return _save_state(average_states([read_state(p) for p in paths]), out)


def blend_weights(start: str | Path, tuned: str | Path, tuned_weight: float, out: str | Path) -> Path:
    """WiSE-FT: ``tuned_weight`` x the fine-tuned weights + (1 - ``tuned_weight``) x the weights it started from,
    saved to ``out`` (atomically) in the fine-tuned weights' dtypes; ``tuned_weight`` in [0, 1] (1: the
    fine-tuned weights as they are)."""
    if not 0.0 <= tuned_weight <= 1.0:
        raise ValueError(f"tuned_weight must be in [0, 1], got {tuned_weight}")
    return _save_state(average_states([read_state(tuned), read_state(start)], [tuned_weight, 1.0 - tuned_weight]),
                       out)


def _save_state(state: dict[str, Tensor], out: str | Path) -> Path:
    """Save a state dict to ``out`` atomically; returns ``Path(out)``."""
    with atomic_path(out) as tmp:
        torch.save(state, tmp)
    return Path(out)
