"""What a benchmark record says about the machine: CPU model and flags, threads, load average."""

from __future__ import annotations

import os
import platform
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_model() -> str:
    """The ``model name`` of /proc/cpuinfo (or the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """Which of :data:`FLAGS` the CPU reports (what decides native bf16)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in FLAGS if f in have]
    except OSError:
        pass
    return []


def describe() -> str:
    """One line: CPU, flags, cores, load average now (the machine is shared: the load says how much)."""
    load = os.getloadavg()
    return (f"{cpu_model()}; flags {' '.join(cpu_flags()) or 'none of ' + ' '.join(FLAGS)}; "
            f"{os.cpu_count()} CPUs; load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min, "
            f"shared machine); runnable now {_runnable()}")


def _runnable() -> str:
    """Threads runnable at this instant (/proc/loadavg), this process's included: the load right now, which the
    1-minute average lags by about a minute."""
    try:
        return Path("/proc/loadavg").read_text().split()[3].split("/")[0]
    except (OSError, IndexError):
        return "?"


def append_record(title: str, body: str, docs: Path | None = None) -> None:
    """Append one dated section, ``## <title> (<UTC time>)`` then ``body``, to docs/benchmarks.md.

    ``$COVSEG_BENCH_CONDITIONS``, when set, is added as a ``- conditions:`` line (e.g. which other jobs were paused
    during the run), so a record says under what load it was measured."""
    import datetime

    docs = docs or Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    conditions = os.environ.get("COVSEG_BENCH_CONDITIONS", "").strip()
    if conditions:
        body = f"- conditions: {conditions}\n{body}"
    with open(docs, "a") as fh:
        fh.write(f"\n## {title} ({when})\n\n{body.rstrip()}\n")
