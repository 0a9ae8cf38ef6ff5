"""Where ONNX Runtime spends a batch of the default network: time per operator type, against the GEMM bound.

Exports (or takes from the cache) the default model's ONNX graph, runs ``--repeats`` batches of ``--batch-size``
random 352² slices with ONNX Runtime's own profiler on (the session options of ``covseg infer``'s backend), and
prints each operator type's seconds per batch and share, beside the bound: the network's FLOPs over the fp32 GEMM
rate measured in the same run (``compute_bound.gemm_rate``). Appends the table to docs/benchmarks.md unless
``--no-docs``.

    python benchmarks/profile_onnx_runtime.py [--batch-size 8] [--repeats 4] [--no-docs]
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path


def operator_seconds(profile: Path, repeats: int) -> dict[str, tuple[float, int]]:
    """``{operator type: (seconds per run, nodes per run)}`` over the last ``repeats`` runs of an ONNX Runtime
    profile (earlier runs, e.g. a first one that allocates, are left out)."""
    events = json.loads(profile.read_text())
    runs = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    since = runs[-repeats] if len(runs) >= repeats else 0
    seconds: collections.Counter = collections.Counter()
    nodes: collections.Counter = collections.Counter()
    for event in events:
        if (event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time")
                and event.get("ts", 0) >= since):
            op = event.get("args", {}).get("op_name", "?")
            seconds[op] += event["dur"] / 1e6
            nodes[op] += 1
    return {op: (s / repeats, nodes[op] // repeats) for op, s in seconds.most_common()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--no-docs", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args(argv)

    import numpy as np
    import onnxruntime as ort
    import torch
    from compute_bound import gemm_rate, network_flops
    from machine import append_record, describe

    from covseg.engines.runtime.onnx_runtime import onnx_runtime_network
    from covseg.networks.loading import load_model

    machine = describe()
    model = load_model()
    flops = network_flops(model.network.eval(), model.image_size)
    path = onnx_runtime_network(model.network, model.image_size).onnx_path
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory(prefix="covseg-ortprof-") as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).random((args.batch_size, 1, model.image_size, model.image_size), np.float32)
        feed = {session.get_inputs()[0].name: x}
        session.run(None, feed)  # the first run allocates; it is not counted
        start = time.perf_counter()
        for _ in range(args.repeats):
            session.run(None, feed)
        wall = (time.perf_counter() - start) / args.repeats
        per_op = operator_seconds(Path(session.end_profiling()), args.repeats)
    rate = gemm_rate(torch.float32)
    bound = args.batch_size * flops / (rate * 1e9)
    total = sum(s for s, _ in per_op.values())
    rows = [f"| {op} | {n} | {s:.3f} | {100 * s / total:.1f} % |" for op, (s, n) in list(per_op.items())[:12]]
    conv = sum(s for op, (s, _) in per_op.items() if "Conv" in op)
    lines = [
        f"- command: `python benchmarks/profile_onnx_runtime.py --batch-size {args.batch_size} --repeats "
        f"{args.repeats}` (random 352² slices; covseg infer's ONNX Runtime session options; "
        f"{torch.get_num_threads()} threads)",
        f"- machine: {machine}; onnxruntime {ort.__version__}",
        f"- a batch of {args.batch_size}: {wall:.3f} s wall; {args.batch_size} x {flops / 1e9:.1f} GFLOP at "
        f"{rate:.0f} GFLOP/s (fp32 GEMM, this run) = bound {bound:.3f} s; wall = {wall / bound:.2f} x bound; "
        f"the convolutions alone {conv:.3f} s = {conv / bound:.2f} x bound",
        "",
        "| operator | nodes | s / batch | share of operator time |",
        "|---|---:|---:|---:|",
        *rows,
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_docs:
        append_record("ONNX Runtime per operator, default network", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
