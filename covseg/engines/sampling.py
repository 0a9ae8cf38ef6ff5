"""Training draws that give every data source the same weight, whatever its size.

The classifier's two sources differ fivefold in size (1,707 sars-cov-2-ct against 494 ucsd-covid-ct training
slices), so a plain shuffle shows the small source a fifth as often. :class:`SourceBalancedSampler` draws items
with replacement, each with probability ``1 / (number of sources x its source's size)``, so every source fills an
equal share of each epoch in expectation; the draws depend only on the seed and the epoch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from covseg.engines.seeding import epoch_seed

__all__ = ["SourceBalancedSampler", "source_weights"]


def source_weights(items: Sequence[dict], key: str = "source") -> torch.Tensor:
    """Per-item draw weights (summing to 1) that give each value of ``item[key]`` the same total weight."""
    if not items:
        raise ValueError("cannot sample from an empty training set")
    counts = Counter(item.get(key, "") for item in items)
    return torch.tensor([1.0 / (len(counts) * counts[item.get(key, "")]) for item in items], dtype=torch.float64)


class SourceBalancedSampler(Sampler[int]):
    """``num_samples`` indices (default: as many as items) drawn with replacement by :func:`source_weights`; the
    trainer's :meth:`set_epoch` makes a resumed run draw what the uninterrupted one drew."""

    def __init__(self, items: Sequence[dict], seed: int = 0, num_samples: int | None = None,
                 key: str = "source") -> None:
        self.weights = source_weights(items, key)
        self.num_samples, self.seed, self.epoch = num_samples or len(items), seed, 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        yield from torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator).tolist()
