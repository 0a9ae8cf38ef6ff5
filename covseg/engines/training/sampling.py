"""Training draws that depend only on the run's seed and the epoch, so a resumed run draws what the
uninterrupted one drew (the trainers call :meth:`EpochDraws.set_epoch` as each epoch starts,
:func:`covseg.engines.training.seeding.follow_epochs`).

* :class:`EpochSampler`: repeated random permutations of a set (Semi-Inf-Net's rounds).
* :class:`SourceBalancedSampler`: every data source the same weight, whatever its size. The classifier's two
  sources differ fivefold (1,707 sars-cov-2-ct against 494 ucsd-covid-ct training slices), so a plain shuffle shows
  the small source a fifth as often; here items are drawn with replacement, each with probability
  ``1 / (number of sources x its source's size)`` (:func:`source_weights`).
* :class:`LabelledPlusDraws`: every labelled item each epoch, plus a fresh draw of ``per_epoch`` pseudo-labelled
  items (the multi-class head's self-training: 45 labelled slices beside 1,600 pseudo-labelled ones).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from covseg.engines.training.seeding import epoch_seed

__all__ = ["EpochDraws", "EpochSampler", "LabelledPlusDraws", "SourceBalancedSampler", "source_weights"]


class EpochDraws(Sampler[int]):
    """``num_samples`` indices an epoch, drawn by :meth:`draw` from a generator seeded with (seed, epoch)."""

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        if num_samples < 1:
            raise ValueError("cannot sample from an empty training set")
        self.num_samples, self.seed, self.epoch = num_samples, seed, 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        yield from self.draw(torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch)))

    def draw(self, generator: torch.Generator) -> Iterator[int]:
        raise NotImplementedError


class EpochSampler(EpochDraws):
    """``num_samples`` indices of a ``size``-item set, as repeated random permutations (None: one permutation)."""

    def __init__(self, size: int, num_samples: int | None = None, seed: int = 0) -> None:
        if size < 1:
            raise ValueError("cannot sample from an empty training set")
        super().__init__(num_samples or size, seed)
        self.size = size

    def draw(self, generator: torch.Generator) -> Iterator[int]:
        left = self.num_samples
        while left > 0:
            order = torch.randperm(self.size, generator=generator).tolist()[:left]
            left -= len(order)
            yield from order


def source_weights(items: Sequence[dict], key: str = "source") -> torch.Tensor:
    """Per-item draw weights (summing to 1) that give each value of ``item[key]`` the same total weight."""
    if not items:
        raise ValueError("cannot sample from an empty training set")
    counts = Counter(item.get(key, "") for item in items)
    return torch.tensor([1.0 / (len(counts) * counts[item.get(key, "")]) for item in items], dtype=torch.float64)


class SourceBalancedSampler(EpochDraws):
    """``num_samples`` indices (default: as many as items) drawn with replacement by :func:`source_weights`."""

    def __init__(self, items: Sequence[dict], seed: int = 0, num_samples: int | None = None,
                 key: str = "source") -> None:
        self.weights = source_weights(items, key)
        super().__init__(num_samples or len(items), seed)

    def draw(self, generator: torch.Generator) -> Iterator[int]:
        yield from torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator).tolist()


class LabelledPlusDraws(EpochDraws):
    """Indices of a dataset whose first ``labelled`` items are labelled and whose next ``extra`` are not: each
    epoch all the labelled ones and ``per_epoch`` distinct extra ones (``min(per_epoch, extra)``), shuffled
    together."""

    def __init__(self, labelled: int, extra: int, per_epoch: int, seed: int = 0) -> None:
        if labelled < 1 or extra < 0 or per_epoch < 0:
            raise ValueError(f"need labelled >= 1 and extra, per_epoch >= 0, got {labelled}, {extra}, {per_epoch}")
        self.labelled, self.extra, self.per_epoch = labelled, extra, min(per_epoch, extra)
        super().__init__(labelled + self.per_epoch, seed)

    def draw(self, generator: torch.Generator) -> Iterator[int]:
        extra = torch.randperm(self.extra, generator=generator)[:self.per_epoch] + self.labelled
        chosen = torch.cat([torch.arange(self.labelled), extra])
        yield from chosen[torch.randperm(len(chosen), generator=generator)].tolist()
