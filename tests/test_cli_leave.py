"""The console script's fast exit (:mod:`covseg.cli.leave`): the status, output and clean-up of a normal exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from utils import REPO, run_python

WITH_TORCH = """
import atexit, pathlib, sys, tempfile, threading, time
import torch
from covseg.cli.leave import leave

marks = pathlib.Path(sys.argv[1])
atexit.register(lambda: (marks / "atexit").write_text("ran"))
kept = tempfile.TemporaryDirectory(dir=marks)          # cleaned up by its finalizer at exit
pathlib.Path(kept.name, "inside").write_text("x")
threading.Thread(target=lambda: (time.sleep(0.3), (marks / "thread").write_text("done"))).start()
print("buffered to the end", end="")                   # no newline: sits in the buffer until the exit flushes it
print("warning: on stderr", end="", file=sys.stderr)
leave(3)
"""


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return run_python(textwrap.dedent(code), *args, timeout=120)


def test_leave_with_torch_loaded_keeps_status_output_threads_and_clean_up(tmp_path: Path) -> None:
    done = _run(WITH_TORCH, str(tmp_path))
    assert done.returncode == 3, done.stderr
    assert done.stdout == "buffered to the end"
    assert done.stderr == "warning: on stderr"
    assert (tmp_path / "thread").read_text() == "done"  # the non-daemon thread was waited for
    assert (tmp_path / "atexit").read_text() == "ran"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atexit", "thread"]  # the temporary folder is gone


def test_leave_does_not_wait_forever_for_an_idle_thread_pool() -> None:
    done = _run("import torch\nfrom concurrent.futures import ThreadPoolExecutor\nfrom covseg.cli.leave import leave\n"
                "pool = ThreadPoolExecutor(2)\nprint(pool.submit(lambda: 7).result())\nleave(4)")
    assert done.returncode == 4, done.stderr
    assert done.stdout.strip() == "7"


def test_leave_without_torch_is_an_ordinary_exit() -> None:
    done = _run("from covseg.cli.leave import leave\nimport sys\n"
                "print(sorted(m for m in sys.modules if m == 'torch'))\nleave(2)")
    assert done.returncode == 2
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("argv, status", [(["--version"], 0), (["no-such-command"], 2),
                                          (["infer", "missing.nii.gz", "--out", "{tmp}"], 1)])
def test_python_m_covseg_exits_with_the_commands_status(argv: list[str], status: int, tmp_path: Path) -> None:
    argv = [a.format(tmp=tmp_path / "out") for a in argv]
    done = subprocess.run([sys.executable, "-m", "covseg", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == status, done.stderr
    if argv[0] == "infer":  # torch was loaded: the fast exit, with the summary written and the error line shown
        assert (tmp_path / "out" / "summary.json").is_file()
        assert "missing.nii.gz: does not exist" in done.stderr


def test_a_reader_that_has_left_ends_the_run_without_a_traceback(tmp_path: Path) -> None:
    """``covseg ... | head``: the pipe's reader is gone before covseg prints its table; exit status 1, no traceback
    (before: ``BrokenPipeError`` and its traceback). (``--help`` was quiet already: argparse ignores the error.)"""
    argv = ["infer", "missing.nii.gz", "--out", "{tmp}"]
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to stdout now fails with EPIPE
    try:
        done = subprocess.run([sys.executable, "-m", "covseg", *[a.format(tmp=tmp_path / "out") for a in argv]],
                              cwd=REPO, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr and "BrokenPipe" not in done.stderr
