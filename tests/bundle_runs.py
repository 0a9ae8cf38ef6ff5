"""Helpers for tests that run the Inf-Net bundle's configs in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "infnet"
TRAIN = str(BUNDLE / "configs" / "train.yaml")
TINY = ["--train_limit", "4", "--image_size", "64", "--batch_size", "2", "--val_interval", "1"]


def run_ok(args: list[str], env_extra: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``args`` from the repository root with one OpenMP thread; fail the test with the output tails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def bundle_cmd(run_id: str, config: str, *overrides: str) -> list[str]:
    """``python -m monai.bundle run RUN_ID --config_file CONFIG`` for the Inf-Net bundle, with overrides."""
    return [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", config,
            "--bundle_root", str(BUNDLE), *overrides]


def verify_metadata(meta_file: Path) -> subprocess.CompletedProcess:
    """``python -m monai.bundle verify_metadata`` of ``meta_file`` against the schema in bundles/schema (offline)."""
    return subprocess.run([sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", str(meta_file),
                           "--filepath", str(REPO / "bundles" / "schema" / "meta_schema.json")],
                          capture_output=True, text=True, timeout=300)
