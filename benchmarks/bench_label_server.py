"""Load on covseg's MONAI Label server: concurrent infer clients for a bounded time, on loopback only.

Usage: ``python benchmarks/bench_label_server.py [--clients 8] [--duration 120] [--model covseg_infection]
[--threads 1] [--bf16 auto] [--backend auto] [--timeout 1800] [--no-docs]``.

Starts ``covseg label-server`` on 127.0.0.1 (a free port) with a temporary studies folder holding copies of the
real CT volumes in ``../shared/data/ct-volumes`` (chest-cip64, chest-2slice, abdomen-totalseg's small volume).
Each client thread sends ``POST /infer/<model>?image=<id>`` in a loop, cycling through the volumes from its own
offset, and starts no new request after ``--duration`` seconds; requests still queued then are waited for (each at most
``--timeout`` s) and counted. Every response is checked: HTTP 200, a label volume whose size, spacing,
origin and direction equal those of the image it asked for, and the model's label values only. The server's own
compute time per request (``latencies.total`` in the result JSON) is compared with the client's latency: the
difference is the time the request waited for the requests before it (MONAI Label runs inference inside the
request handler, one at a time). The server, and anything it started, are stopped by process group at the end.

Prints a JSON summary and a markdown table and appends them, with the command, the CPU and the load average, to
``docs/benchmarks.md`` (unless ``--no-docs``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "benchmarks.md"
CT_VOLUMES = Path(os.environ.get("COVSEG_SHARED_DATA", REPO.parent / "shared" / "data")) / "ct-volumes"
VOLUMES = {"chest-cip64": "chest-cip64/ct.nii.gz", "chest-2slice": "chest-2slice/ct.nii.gz",
           "abdomen-totalseg": "abdomen-totalseg/example_ct_sm.nii.gz"}


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (linear interpolation), ``nan`` for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def start_server(studies: Path, app_dir: Path, log: Path, threads: int) -> tuple[subprocess.Popen, str, int]:
    """``covseg label-server`` in its own session; returns the process, the base URL and the server's group."""
    import requests

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "covseg", "label-server", "--studies", str(studies), "--app-dir",
                             str(app_dir), "--threads", str(threads), "--verbose", "WARNING"],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 180
    url, pgid = None, None
    while time.monotonic() < deadline and proc.poll() is None:
        match = re.search(r"(http://127\.0\.0\.1:\d+)/ \(pid \d+, process group (\d+)\)", log.read_text())
        if match:
            url, pgid = match.group(1), int(match.group(2))
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{url}/info/", timeout=10).status_code == 200:
                    return proc, url, pgid
        time.sleep(0.5)
    stop_server(proc, pgid)
    raise SystemExit(f"label-server did not start:\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen, server_pgid: int | None) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
    for pgid in (server_pgid, proc.pid):
        if pgid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)


def check_label(content: bytes, image: Path, allowed: set[int], scratch: Path) -> str | None:
    """``None`` when the label volume ``content`` has ``image``'s geometry and allowed values, else why not."""
    import numpy as np
    import SimpleITK as sitk

    fd, name = tempfile.mkstemp(suffix=".nii.gz", dir=scratch)
    os.close(fd)
    try:
        Path(name).write_bytes(content)
        label, ref = sitk.ReadImage(name), sitk.ReadImage(str(image))
    except RuntimeError as exc:
        return f"unreadable label ({' '.join(str(exc).split())[:120]})"
    finally:
        Path(name).unlink(missing_ok=True)
    if label.GetSize() != ref.GetSize():
        return f"size {label.GetSize()} != {ref.GetSize()}"
    for what, a, b in (("spacing", label.GetSpacing(), ref.GetSpacing()), ("origin", label.GetOrigin(),
                       ref.GetOrigin()), ("direction", label.GetDirection(), ref.GetDirection())):
        if not np.allclose(a, b, atol=1e-4):
            return f"{what} {a} != {b}"
    values = set(np.unique(sitk.GetArrayViewFromImage(label)).tolist())
    if not values <= allowed | {0}:
        return f"label values {sorted(values)} outside {sorted(allowed | {0})}"
    return None


def client(index: int, url: str, model: str, images: dict[str, Path], allowed: set[int], params: dict,
           stop_at: float, timeout: float, scratch: Path, records: list, lock: threading.Lock) -> None:
    """One client: infer requests in a loop until ``stop_at`` (monotonic), each checked and recorded."""
    import requests
    from requests_toolbelt.multipart.decoder import MultipartDecoder

    ids = list(images)
    k = index
    with requests.Session() as session:
        while time.monotonic() < stop_at:
            image = ids[k % len(ids)]
            k += 1
            rec = {"client": index, "image": image, "sent": time.monotonic()}
            try:
                res = session.post(f"{url}/infer/{model}", params={"image": image},
                                   data={"params": json.dumps(params)}, timeout=timeout)
                rec["done"] = time.monotonic()
                rec["status"] = res.status_code
                if res.status_code != 200:
                    rec["error"] = f"HTTP {res.status_code}: {res.text[:200]}"
                else:
                    parts = {}
                    for part in MultipartDecoder.from_response(res).parts:
                        disposition = part.headers.get(b"Content-Disposition", b"").decode()
                        parts["params" if 'name="params"' in disposition else "image"] = part.content
                    meta = json.loads(parts["params"])
                    rec["compute_s"] = float(meta["latencies"]["total"])
                    rec["precision"] = meta.get("precision", "-")
                    rec["backend"] = meta.get("backend", "-")
                    rec["mismatch"] = check_label(parts["image"], images[image], allowed, scratch)
            except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the run
                rec.setdefault("done", time.monotonic())
                rec["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            with lock:
                records.append(rec)


def summarise(records: list[dict], t0: float, duration: float) -> dict:
    ok = [r for r in records if "error" not in r]
    latencies = [r["done"] - r["sent"] for r in ok]
    waits = [max(r["done"] - r["sent"] - r["compute_s"], 0.0) for r in ok]
    computes = [r["compute_s"] for r in ok]
    span = max((r["done"] for r in records), default=t0) - t0
    busy = sum(computes)
    return {
        "requests_sent": len(records),
        "requests_served": len(ok),
        "errors": len(records) - len(ok),
        "mismatched_geometry": sum(1 for r in ok if r.get("mismatch")),
        "mismatches": sorted({r["mismatch"] for r in ok if r.get("mismatch")})[:5],
        "error_messages": sorted({r["error"] for r in records if "error" in r})[:5],
        "sent_within_s": duration,
        "last_response_after_s": round(span, 1),
        "latency_p50_s": round(percentile(latencies, 50), 2),
        "latency_p95_s": round(percentile(latencies, 95), 2),
        "latency_max_s": round(max(latencies, default=float("nan")), 2),
        "compute_p50_s": round(percentile(computes, 50), 2),
        "wait_p50_s": round(percentile(waits, 50), 2),
        "wait_max_s": round(max(waits, default=float("nan")), 2),
        "server_busy_fraction": round(busy / span, 3) if span > 0 else None,
        "mean_requests_in_system": round(sum(latencies) / span, 2) if span > 0 else None,
        "precision": sorted({r.get("precision", "-") for r in ok}),
        "backend": sorted({r.get("backend", "-") for r in ok}),
        "served_per_image": {img: sum(1 for r in ok if r["image"] == img) for img in sorted({r["image"] for r in ok})},
        "compute_p50_per_image_s": {img: round(percentile([r["compute_s"] for r in ok if r["image"] == img], 50), 2)
                                    for img in sorted({r["image"] for r in ok})},
    }


def markdown(summary: dict, args: argparse.Namespace, load: tuple, load_after: tuple) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    s = summary
    rows = [("clients", args.clients), ("requests sent (new ones for s)", f"{s['requests_sent']} ({args.duration})"),
            ("requests served", s["requests_served"]), ("errors", s["errors"]),
            ("mismatched geometry / values", s["mismatched_geometry"]),
            ("latency p50 / p95 / max (s)", f"{s['latency_p50_s']} / {s['latency_p95_s']} / {s['latency_max_s']}"),
            ("server compute p50 (s); precision; backend",
             f"{s['compute_p50_s']}; {', '.join(s['precision'])}; {', '.join(s['backend'])}"),
            ("wait in queue p50 / max (s)", f"{s['wait_p50_s']} / {s['wait_max_s']}"),
            ("server busy fraction", s["server_busy_fraction"]),
            ("mean requests in the server", s["mean_requests_in_system"]),
            ("last response after (s)", s["last_response_after_s"]),
            ("served per volume", ", ".join(f"{k} {v}" for k, v in s["served_per_image"].items())),
            ("compute p50 per volume (s)", ", ".join(f"{k} {v}" for k, v in s["compute_p50_per_image_s"].items()))]
    lines = [f"## MONAI Label server under load: {args.clients} infer clients, {args.duration} s ({now})", "",
             f"`python benchmarks/bench_label_server.py --clients {args.clients} --duration {args.duration} "
             f"--model {args.model} --threads {args.threads} --bf16 {args.bf16} --backend {args.backend}`; "
             f"{cpu_name()}, "
             f"{os.cpu_count()} cores, torch threads {args.threads} in the server; load average (1/5/15 min) "
             f"{'/'.join(f'{x:.1f}' for x in load)} before, {'/'.join(f'{x:.1f}' for x in load_after)} after "
             "(shared machine). Real CT volumes from ct-volumes/, loopback only.", "",
             "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds during which requests are sent")
    parser.add_argument("--model", default="covseg_infection")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bf16", default="auto",
                        help="infer precision: auto (bf16 where the CPU runs it natively, as users get), false, true")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime"),
                        help="infer backend (auto: ONNX Runtime where the request runs fp32 on the CPU)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="client timeout per request (s)")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(argv)
    import requests

    missing = [rel for rel in VOLUMES.values() if not (CT_VOLUMES / rel).is_file()]
    if missing:
        raise SystemExit(f"real CT volumes not found under {CT_VOLUMES}: {', '.join(missing)}")
    work = Path(tempfile.mkdtemp(prefix="covseg-bench-label-"))
    studies, scratch = work / "studies", work / "scratch"
    studies.mkdir()
    scratch.mkdir()
    images = {}
    for name, rel in VOLUMES.items():
        images[name] = studies / f"{name}.nii.gz"
        shutil.copy(CT_VOLUMES / rel, images[name])
    load = os.getloadavg()
    proc, url, pgid = start_server(studies, work / "app", work / "server.log", args.threads)
    try:
        info = requests.get(f"{url}/info/", timeout=30).json()
        allowed = set(info["models"][args.model]["labels"].values())
        params = {} if args.model == "covseg_lungs" else {"bf16": args.bf16, "backend": args.backend}
        records: list[dict] = []
        lock = threading.Lock()
        t0 = time.monotonic()
        threads = [threading.Thread(target=client, args=(i, url, args.model, images, allowed, params,
                                                         t0 + args.duration, args.timeout, scratch, records, lock))
                   for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        stop_server(proc, pgid)
    load_after = os.getloadavg()
    summary = summarise(records, t0, args.duration)
    summary["load_average_before"], summary["load_average_after"] = load, load_after
    print(json.dumps(summary, indent=2))
    text = markdown(summary, args, load, load_after)
    print(text)
    if not args.no_docs:
        with DOCS.open("a") as fh:
            fh.write("\n" + text)
    shutil.rmtree(work, ignore_errors=True)
    return 0 if summary["errors"] == 0 and summary["mismatched_geometry"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
