"""Shared pytest fixtures: where the real data lives, and skips when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("COVSEG_SHARED_DATA", REPO.parent / "shared" / "data"))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set COVSEG_SHARED_DATA to the shared/data folder)")
    return path


@pytest.fixture(scope="session")
def semiseg_dir() -> Path:
    """The COVID-SemiSeg dataset folder (skips the test when absent)."""
    return _require(SHARED_DATA / "covid-semiseg")


@pytest.fixture(scope="session")
def cls_dir() -> Path:
    """The covid-ct-cls slice-classification dataset folder (skips the test when absent)."""
    return _require(SHARED_DATA / "covid-ct-cls" / "labels.csv").parent


@pytest.fixture(scope="session")
def ct_volumes_dir() -> Path:
    """The folder of small real CT volumes (skips the test when absent)."""
    return _require(SHARED_DATA / "ct-volumes")


@pytest.fixture
def one_torch_thread():
    """One torch thread: on a shared 2-core machine oversubscribed OpenMP threads were measured 20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def own_model_cache(tmp_path_factory):
    """The ONNX exports of a test session (``$COVSEG_CACHE``; ``--backend auto`` exports trained weights on CPUs
    without native bf16) go to a folder of the session's own, not the user's cache. Subprocesses inherit it."""
    if os.environ.get("COVSEG_CACHE"):
        yield
        return
    os.environ["COVSEG_CACHE"] = str(tmp_path_factory.mktemp("covseg-cache"))
    yield
    os.environ.pop("COVSEG_CACHE", None)
