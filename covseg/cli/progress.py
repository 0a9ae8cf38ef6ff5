"""The progress of a batch of volumes: a bar on a terminal, one line per volume in a log.

On a terminal, a tqdm bar with one tick per volume, the current volume and slice batch beside it. When stderr is
not a terminal (a batch job whose stderr goes to a log file, ``nohup``, a scheduler), a bar would be a stream of
carriage returns and tqdm is off; instead each finished volume prints one ``progress:`` line with the count, the
volume, its outcome and an estimate of the time left, so a log of a long batch shows how far it is."""

from __future__ import annotations

import sys
import time

__all__ = ["VolumeProgress", "duration_text"]


def duration_text(seconds: float) -> str:
    """``42 s``, ``7 min 05 s`` or ``3 h 12 min``: a duration as a person reads it in a log."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class VolumeProgress:
    """A tqdm bar over volumes whose postfix shows the current volume and slice batch; error lines print above it.
    Without a terminal (and without ``disable``): one ``progress:`` line per finished volume on stderr instead.

    Its ``on_start`` / ``on_batch`` / ``on_result`` are the callbacks of covseg's batch workflows."""

    def __init__(self, total: int, disable: bool, desc: str = "covseg") -> None:
        from tqdm import tqdm

        self.lines = not disable and not _is_terminal(sys.stderr)
        self.bar = tqdm(total=total, unit="vol", desc=desc, disable=disable or None, file=sys.stderr,
                        dynamic_ncols=True)
        self.name = ""
        self.total, self.done, self.failed, self.computed = total, 0, 0, 0
        self.started = time.perf_counter()
        self.first_volume: float | None = None
        """When the first volume started: the time-left estimate leaves out the start-up (imports, models)."""

    def __enter__(self) -> VolumeProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.bar.close()

    def on_start(self, src) -> None:
        if self.first_volume is None:
            self.first_volume = time.perf_counter()
        self.name = src.name
        self.bar.set_postfix_str(src.name, refresh=True)

    def on_batch(self, done: int, total: int) -> None:
        self.bar.set_postfix_str(f"{self.name}: slice batch {done}/{total}", refresh=True)

    def on_result(self, result) -> None:
        if not result.ok:
            self.bar.write(f"error: {result.error}", file=sys.stderr)
        self.bar.update(1)
        self.done += 1
        self.failed += not result.ok
        earlier = bool(getattr(result, "earlier", False))
        self.computed += result.ok and not earlier  # failures are quick: they would make the estimate short
        if self.lines:
            print(self.line(result.name, "kept from an earlier run" if earlier else "ok" if result.ok else "FAILED"),
                  file=sys.stderr, flush=True)

    def line(self, name: str, outcome: str) -> str:
        """The ``progress:`` line after volume ``name`` (its ``outcome``): count, elapsed time, time left."""
        elapsed = time.perf_counter() - self.started
        failed = f", {self.failed} failed" if self.failed else ""
        text = f"progress: {self.done}/{self.total} {name} {outcome}{failed}; {duration_text(elapsed)} elapsed"
        left = self.total - self.done
        if left and self.computed:  # the rate of the volumes done in this run (kept and failed ones cost little)
            working = time.perf_counter() - (self.first_volume if self.first_volume is not None else self.started)
            text += f", about {duration_text(working / self.computed * left)} left"
        return text


def _is_terminal(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
