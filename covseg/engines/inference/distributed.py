"""Sharding a batch of volumes over processes started by ``torchrun`` (gloo on CPU, NCCL-free).

Each rank takes every ``world``-th volume; results are gathered on rank 0, which writes the one combined report.
Without ``torchrun`` (no ``WORLD_SIZE`` > 1 in the environment) everything runs in the one process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's place among ``world`` processes."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        """True on the rank that writes combined outputs."""
        return self.rank == 0

    def take(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items`` (every ``world``-th, starting at ``rank``)."""
        return list(items[self.rank::self.world])

    def gather(self, items: Sequence[T], total: int) -> list[T]:
        """All ranks' shares back in the original order (on every rank); ``total`` = len of the full list."""
        if self.world == 1:
            return list(items)
        shares: list = [None] * self.world
        dist.all_gather_object(shares, list(items))
        ordered: list = [None] * total
        for rank, share in enumerate(shares):
            for k, item in enumerate(share):
                ordered[rank + k * self.world] = item
        return [item for item in ordered if item is not None]

    def close(self) -> None:
        """Wait for every rank, then tear the process group down (a live gloo group at exit aborts the process)."""
        if self.world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def shard_from_env() -> Shard:
    """The shard of a ``torchrun`` process (initialising a gloo group if needed), else a single-process shard."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Shard()
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    return Shard(rank=dist.get_rank(), world=dist.get_world_size())
