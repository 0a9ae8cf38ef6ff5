"""Leave the ``covseg`` process once its work is done, without the interpreter's teardown.

With torch and MONAI loaded, Python's own exit spends about 0.8 s (``benchmarks/bench_exit.py``) destroying
thousands of module objects and the libraries' static state after every output is already written. The console
script therefore does what a normal exit does that matters (waits for non-daemon threads, runs the ``atexit``
handlers, which include logging's shutdown and the clean-up of temporary folders, flushes stdout and stderr) and then
ends the process with ``os._exit``. Processes that never imported torch (``--help``, usage errors) exit normally.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["entry", "leave"]


def leave(code: int) -> NoReturn:
    """End the process with exit status ``code``; skip the interpreter's teardown when torch is loaded."""
    shutdown = getattr(threading, "_shutdown", None)
    if "torch" not in sys.modules or shutdown is None or threading.current_thread() is not threading.main_thread():
        raise SystemExit(code)  # cheap to tear down, or not the main thread: the ordinary way
    shutdown()  # as the interpreter's exit: stop idle pool workers, then wait for the non-daemon threads
    atexit._run_exitfuncs()  # what Py_Finalize runs first; includes logging.shutdown and tempfile's finalizers
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (``covseg ... | head``): nothing to save
            stream.flush()
    os._exit(code)


def entry(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``covseg`` console script and ``python -m covseg``: :func:`covseg.cli.main.main`, then :func:`leave`.

    A reader that leaves early (``covseg evaluate ... --json | head``) ends the run with exit status 1 and no
    traceback, as Python's documentation advises for a closed pipe: standard output then goes to ``os.devnull``."""
    from covseg.cli.main import main

    try:
        code = main(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    leave(code)
