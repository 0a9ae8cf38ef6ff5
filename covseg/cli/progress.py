"""The progress bar of a batch of volumes: one tick per volume, the current volume and slice batch beside it."""

from __future__ import annotations

import sys

__all__ = ["VolumeProgress"]


class VolumeProgress:
    """A tqdm bar over volumes whose postfix shows the current volume and slice batch; error lines print above it.

    Its ``on_start`` / ``on_batch`` / ``on_result`` are the callbacks of covseg's batch workflows."""

    def __init__(self, total: int, disable: bool, desc: str = "covseg") -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="vol", desc=desc, disable=disable or None, file=sys.stderr,
                        dynamic_ncols=True)
        self.name = ""

    def __enter__(self) -> VolumeProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.bar.close()

    def on_start(self, src) -> None:
        self.name = src.name
        self.bar.set_postfix_str(src.name, refresh=True)

    def on_batch(self, done: int, total: int) -> None:
        self.bar.set_postfix_str(f"{self.name}: slice batch {done}/{total}", refresh=True)

    def on_result(self, result) -> None:
        if not result.ok:
            self.bar.write(f"error: {result.error}", file=sys.stderr)
        self.bar.update(1)
