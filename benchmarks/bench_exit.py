"""What the console script's fast exit (:mod:`covseg.cli.leave`) saves: the teardown of a process that loaded what
``covseg infer`` loads, ended by Python's normal exit against ``covseg.cli.leave.leave``.

Usage: ``python benchmarks/bench_exit.py [--repeats 5] [--no-docs]``.

Each process imports the modules ``covseg infer`` uses (as ``bench_infer.py`` lists them), writes the time it is
done, and exits; the figure is the time from that mark to the parent seeing the process end. The two ways run
interleaved, one fresh process each; the table gives medians. Appends the table, command and machine to
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_infer import INFER_IMPORTS
from machine import append_record, describe

REPO = Path(__file__).resolve().parents[1]

WAYS = {"normal exit (sys.exit)": "raise SystemExit(0)",
        "covseg.cli.leave.leave (console script)": "from covseg.cli.leave import leave; leave(0)"}


def _teardown_seconds(exit_code: str, mark: Path) -> float:
    code = f"{INFER_IMPORTS}\nimport time\nopen({str(mark)!r}, 'w').write(repr(time.time()))\n{exit_code}"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    return time.time() - float(mark.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    machine = describe()
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory() as tmp:
        mark = Path(tmp) / "done"
        for _ in range(args.repeats):
            for way, exit_code in WAYS.items():
                times[way].append(_teardown_seconds(exit_code, mark))
    lines = ["| exit | median s from the last line of work to the process's end | min s | max s |",
             "|---|---:|---:|---:|"]
    for way, values in times.items():
        lines.append(f"| {way} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_docs:
        append_record("Exit of a `covseg infer` process: normal against the console script's",
                      f"- command: `python benchmarks/bench_exit.py --repeats {args.repeats}` (fresh processes, "
                      f"interleaved, medians)\n- what each process loads: `{INFER_IMPORTS}`\n"
                      f"- machine: {machine}\n\n{table}\n")
        print("\nappended to docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
