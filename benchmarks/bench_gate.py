"""What the classifier gate (``covseg infer --gate``) costs per slice, against the Inf-Net pass it can save.

Usage: ``python benchmarks/bench_gate.py [--repeats 5] [--backend auto|torch|onnxruntime] [--no-docs]``.

On the 48 COVID-SemiSeg test slices (random slices when the data is absent), interleaved rounds of:

* ``Inf-Net, torch``: :class:`covseg.engines.inference.predictor.SlicePredictor` with the shipped Inf-Net bundle and
  ``covseg infer``'s defaults (batches of 8, channels-last, BatchNorms folded, bf16 where the CPU has native kernels);
* ``gate, torch``: :class:`covseg.engines.inference.slice_scorer.SliceScorer` with the shipped classifier bundle as the
  gate runs it on torch (the batches of 8 that ``infer_volume`` hands it, bf16 where native, BatchNorms folded,
  channels-last);
* ``gate, torch, network as it is``: the same scorer with ``fast=False`` (before the folded copy);
* where ``--backend`` resolves to ONNX Runtime (``auto`` on CPUs without native bf16), ``Inf-Net, onnxruntime`` and
  ``gate, onnxruntime``: both networks as ``covseg infer --gate`` then runs them.

The gate scores every lung slice and saves Inf-Net on the slices it skips, so it saves network time when the
share of skipped slices exceeds gate s / Inf-Net s (the break-even share printed, on the backend ``--backend``
picks). Appends a record to ``docs/benchmarks.md`` with the machine's CPU flags and load.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from machine import append_record, describe

from covseg.engines.inference.predictor import SlicePredictor
from covseg.engines.inference.slice_scorer import SliceScorer
from covseg.engines.runtime.backend_model import load_backend_model, scoring_runtime
from covseg.engines.runtime.onnx_runtime import OnnxRuntimeNetwork
from covseg.io.slices import list_images, read_grey
from covseg.networks.loading import DEFAULT_BUNDLE, load_bundle

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "covid-semiseg" / "test" / "images"
CLASSIFIER = REPO / "bundles" / "jcs_classifier"
GATE_BATCH = 8
"""``covseg infer`` hands the gate each Inf-Net batch (8 slices by default)."""


def test_slices() -> tuple[list[np.ndarray], str]:
    """The 48 test slices in [0, 1], or 48 random 512² slices when the data is absent; and what they are."""
    if DATA.is_dir():
        return [read_grey(p) for p in list_images(DATA)], "COVID-SemiSeg test slices (48, native sizes)"
    rng = np.random.default_rng(0)
    return [rng.random((512, 512), dtype=np.float32) for _ in range(48)], "48 random 512x512 slices (no data)"


def median_seconds(loops: dict[str, object], slices: list[np.ndarray], repeats: int) -> dict[str, float]:
    """Median seconds per slice of each loop, timed once per round, the loops interleaved."""
    times: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(repeats):
        for name, run in loops.items():
            start = time.perf_counter()
            run(slices)
            times[name].append((time.perf_counter() - start) / len(slices))
    return {name: float(np.median(t)) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backend", choices=("auto", "torch", "onnxruntime"), default="auto",
                        help="the backend whose break-even share is printed (default: covseg infer's)")
    parser.add_argument("--no-docs", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args()
    slices, what = test_slices()
    machine_before = describe()
    infnet, classifier = load_bundle(DEFAULT_BUNDLE), load_bundle(CLASSIFIER)
    fast = SliceScorer(classifier.network, classifier.image_size, batch_size=GATE_BATCH, bf16="auto")
    plain = SliceScorer(classifier.network, classifier.image_size, batch_size=GATE_BATCH, bf16="auto", fast=False)

    def gate(scorer: SliceScorer):
        return lambda s: [scorer(s[i:i + GATE_BATCH]) for i in range(0, len(s), GATE_BATCH)]

    loops = {"Inf-Net, torch": SlicePredictor(infnet.network, image_size=infnet.image_size).predict,
             "gate, torch": gate(fast), "gate, torch, network as it is": gate(plain)}
    segmenter = load_backend_model(backend=args.backend).network
    runtime = scoring_runtime(classifier, args.backend)
    backend = "onnxruntime" if isinstance(segmenter, OnnxRuntimeNetwork) and runtime is not None else "torch"
    if backend == "onnxruntime":
        loops["Inf-Net, onnxruntime"] = SlicePredictor(segmenter, image_size=infnet.image_size).predict
        loops["gate, onnxruntime"] = gate(SliceScorer(classifier.network, classifier.image_size,
                                                      batch_size=GATE_BATCH, scoring=runtime))
    for run in loops.values():  # warm-up: first-call allocations and oneDNN primitive creation
        run(slices[:GATE_BATCH])
    seconds = median_seconds(loops, slices, args.repeats)
    want = plain(slices)
    agree = float(np.abs(fast(slices) - want).max())
    agree_ort = float(np.abs(SliceScorer(classifier.network, classifier.image_size, scoring=runtime)(slices) - want)
                      .max()) if backend == "onnxruntime" else None
    precision = "bf16" if fast.bf16 else "fp32"
    base = seconds[f"Inf-Net, {backend}"]
    rows = [f"| {name} | {1000 * s:.1f} | {s / base:.3f} |" for name, s in seconds.items()]
    options = "".join(f" {flag} {value}" for flag, value, default in
                      (("--repeats", args.repeats, 5), ("--backend", args.backend, "auto")) if value != default)
    text = "\n".join([
        f"- command: `python benchmarks/bench_gate.py{options}`",
        f"- data: {what}; Inf-Net {infnet.meta.get('version')} at {infnet.image_size}², classifier "
        f"{classifier.meta.get('version')} at {classifier.image_size}², torch precision {precision}, "
        f"{torch.get_num_threads()} torch threads; median of {args.repeats} interleaved rounds",
        f"- machine before: {machine_before}",
        f"- machine after: {describe()}",
        "",
        f"| loop | ms / slice | share of an Inf-Net slice ({backend}) |",
        "|---|---:|---:|",
        *rows,
        "",
        f"- on {backend} (what `covseg infer --gate --backend {args.backend}` runs here), the gate saves network time "
        f"when it skips more than {seconds[f'gate, {backend}'] / base:.1%} of the lung slices",
        f"- scores of the folded torch copy vs the network as it is: largest difference {agree:.4f} ({precision})"
        + (f"; of ONNX Runtime (fp32): {agree_ort:.2e}" if agree_ort is not None else ""),
    ])
    print(text)
    if not args.no_docs:
        append_record("Classifier gate cost per slice vs Inf-Net", text)


if __name__ == "__main__":
    main()
