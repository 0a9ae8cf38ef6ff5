"""Run a long bundle training (default: the Semi-Inf-Net procedure) on CUDA when there is a GPU, else on the CPU,
with the same configs and results, and record its wall time and device in ``<output_dir>/train_long.json``.

Usage::

    python scripts/train_long.py --output_dir RUN [--paper-schedule] [--config FILE] [--device cpu|cuda] \\
        [--KEY VALUE ...]

``--KEY VALUE`` pairs are the config's own overrides (values read as YAML: ``null``, ``5``, ``false``), exactly as
``python -m monai.bundle run training --config_file FILE --KEY VALUE`` takes them; this script runs the same
``training`` id. ``--paper-schedule`` is Semi-Inf-Net's propagation as the paper runs it (K = 5 slices a round,
320 rounds, the student labels the next round; each round one epoch of 240 samples at a constant lr 1e-4; only the
newest round's weights kept; a fresh student; the 20-epoch labelled fine-tune after), hours on a GPU instead of
days on a CPU. A killed run resumes with the same command; each start is appended to ``train_long.json``
(device, precision, start, wall seconds, finished or not).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SEMI_TRAIN = REPO / "bundles" / "semi_infnet" / "configs" / "train.yaml"
PAPER_SCHEDULE = {"per_round": 5, "labeller": "student", "samples_per_round": 240, "pseudo_lr": 0.0001,
                  "pseudo_lr_schedule": "constant", "keep_round_weights": False, "student_init": "fresh",
                  "pseudo_passes": 1, "max_epochs": 20, "student_weight": 1.0}


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, dict]:
    parser = argparse.ArgumentParser(
        description=" ".join(__doc__.split("\n\n")[0].split()).replace("``", ""),
        usage="%(prog)s --output_dir RUN [--paper-schedule] [--config FILE] [--device cpu|cuda] [--KEY VALUE ...]",
        epilog="--KEY VALUE: the config's own overrides (values read as YAML: null, 5, false), as python -m "
               "monai.bundle run training --config_file FILE takes them, e.g. --unlabelled_limit 15 --image_size 64")
    parser.add_argument("--output_dir", required=True, type=Path)
    parser.add_argument("--config", type=Path, default=SEMI_TRAIN, help="a bundle's train config (run id training)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None,
                        help="default: cuda when a GPU is available, else cpu")
    parser.add_argument("--paper-schedule", action="store_true", help=f"set {PAPER_SCHEDULE}")
    args, rest = parser.parse_known_args(argv)
    if len(rest) % 2 or any(not key.startswith("--") for key in rest[::2]):
        parser.error(f"overrides come as --KEY VALUE pairs, got {rest}")
    overrides = dict(PAPER_SCHEDULE) if args.paper_schedule else {}
    overrides.update({key[2:]: yaml.safe_load(value) for key, value in zip(rest[::2], rest[1::2])})
    return args, overrides


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    sys.path.insert(0, str(REPO))
    from benchmarks.machine import cpu_model

    return f"{cpu_model()}, {torch.get_num_threads()} torch threads"


def record(path: Path, entry: dict) -> None:
    """Add or update this start's entry (keyed by its start time) in the JSON list at ``path``, atomically."""
    from covseg.io.atomic import atomic_write_text

    runs = json.loads(path.read_text()) if path.exists() else []
    runs = [r for r in runs if r.get("started") != entry["started"]] + [entry]
    atomic_write_text(path, json.dumps(runs, indent=1))


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse(argv)
    from monai.bundle import ConfigWorkflow

    from covseg.engines.runtime.cpu import resolve_bf16

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    args.output_dir.mkdir(parents=True, exist_ok=True)
    bundle_root = args.config.resolve().parents[1]
    workflow = ConfigWorkflow(config_file=str(args.config), workflow_type="train", logging_file=False,
                              run_id="training", bundle_root=str(bundle_root), output_dir=str(args.output_dir),
                              device=device, **overrides)
    workflow.initialize()
    bf16 = resolve_bf16(workflow.parser.get("bf16", False), device)
    entry = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "config": str(args.config),
             "overrides": overrides, "device": device, "device_name": device_name(device),
             "precision": "bf16" if bf16 else "fp32", "torch": torch.__version__, "host": platform.node(),
             "wall_s": None, "finished": False}
    log = args.output_dir / "train_long.json"
    record(log, entry)
    print(f"training on {device} ({entry['device_name']}, {entry['precision']}) into {args.output_dir}", flush=True)
    start = time.perf_counter()
    try:
        workflow.run()
        entry["finished"] = True
    finally:
        entry["wall_s"] = round(time.perf_counter() - start, 1)
        record(log, entry)
    print(f"done in {entry['wall_s']:.0f} s on {device}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
