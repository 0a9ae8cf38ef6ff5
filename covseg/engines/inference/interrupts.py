"""Interruptions of a batch: SIGTERM handled like Ctrl-C, and no empty ignite error line on either.

:func:`terminate_as_interrupt` turns SIGTERM (``kill``, a job scheduler's time limit, ``docker stop``) into
``KeyboardInterrupt`` in the main thread, so a terminated run stops the way a Ctrl-C'd one does: the volume
being written is finished, the summary of the finished volumes is written, nothing half-written stays.
:func:`quiet_ignite_interrupts` drops ignite's ``Engine run is terminating due to exception: `` line, which
for an interrupt has no text after the colon (the CLI prints its own ``error: interrupted`` line).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

__all__ = ["BatchInterrupted", "quiet_ignite_interrupts", "terminate_as_interrupt"]

_IGNITE_LOGGERS = ("ignite.engine.engine.Engine", "ignite.engine.deterministic.DeterministicEngine")


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a batch; ``results`` holds the volumes finished before it."""

    def __init__(self, results: list) -> None:
        super().__init__("interrupted")
        self.results = results


class _DropInterruptLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not (text.endswith("terminating due to exception: ") or text.endswith("due to exception: interrupted"))


def quiet_ignite_interrupts() -> None:
    """Install (once) the filter that drops ignite's empty "terminating due to exception" lines."""
    for name in _IGNITE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropInterruptLines) for f in logger.filters):
            logger.addFilter(_DropInterruptLines())


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises ``KeyboardInterrupt`` in the main thread (no-op in other threads)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
