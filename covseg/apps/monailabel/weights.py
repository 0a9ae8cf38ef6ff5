"""Which weights each of the app's models runs, and loading them once (reloaded when a training publishes).

The shipped bundles are read, never written. Fine-tuning publishes ``<app>/model/<model>/model.pt`` (a MONAI
checkpoint ``{"model": state_dict}``); when that file exists, the infer task of that model uses it instead of the
bundle's ``models/model.pt``, so the next request after a training sees the new weights.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from covseg.networks.loading import DEFAULT_BUNDLE, LoadedModel, load_bundle

__all__ = [
    "BUNDLES_DIR",
    "CLASSIFIER_BUNDLE",
    "INFECTION_MODEL",
    "MULTICLASS_BUNDLE",
    "ModelCache",
    "ResolvedWeights",
    "load_state",
    "bundle_available",
    "multiclass_available",
    "published_weights",
    "resolve_weights",
    "sha256_prefix",
]

BUNDLES_DIR = DEFAULT_BUNDLE.parent
INFECTION_MODEL = "covseg_infection"
MULTICLASS_BUNDLE = BUNDLES_DIR / "multiclass_infnet"
CLASSIFIER_BUNDLE = BUNDLES_DIR / "jcs_classifier"


def bundle_available(bundle: Path) -> bool:
    """True when ``bundle`` exists with its weights and inference config (optional models are offered only then)."""
    return (bundle / "models" / "model.pt").is_file() and (bundle / "configs" / "inference.yaml").is_file()


def multiclass_available(bundle: Path = MULTICLASS_BUNDLE) -> bool:
    """True when the GGO / consolidation bundle exists with its weights (built separately; optional)."""
    return bundle_available(bundle)


def published_weights(model_dir: str | Path, model: str = INFECTION_MODEL) -> Path:
    """Where a training of ``model`` publishes its weights: ``<model_dir>/<model>/model.pt``."""
    return Path(model_dir) / model / "model.pt"


@dataclass(frozen=True)
class ResolvedWeights:
    """The weights an infer request runs: the file, its size and modification time, and whether fine-tuned."""

    path: Path
    size: int
    mtime_ns: int
    fine_tuned: bool


def sha256_prefix(path: Path) -> str:
    """The first 16 hex digits of a file's SHA-256."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def resolve_weights(bundle: Path, published: Path | None) -> ResolvedWeights:
    """The published fine-tuned weights when they exist, else the bundle's ``models/model.pt``."""
    fine_tuned = published is not None and published.is_file()
    path = published if fine_tuned else bundle / "models" / "model.pt"
    stat = path.stat()
    return ResolvedWeights(path, stat.st_size, stat.st_mtime_ns, fine_tuned)


def load_state(network: nn.Module, path: str | Path) -> nn.Module:
    """Load a state dict file into ``network`` as fp32: a plain (fp16) state dict or a checkpoint with ``model``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    network.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return network.eval()


class ModelCache:
    """One loaded network per model, replaced when its weights file changes (path, mtime or content)."""

    def __init__(self, bundle: Path, published: Path | None = None) -> None:
        self.bundle, self.published = Path(bundle), published
        self._lock = threading.Lock()
        self._key: ResolvedWeights | None = None
        self._model: LoadedModel | None = None
        self.sha256 = ""

    def get(self) -> tuple[LoadedModel, ResolvedWeights, str]:
        """The network for the newest weights, the weights, and their sha256 prefix (loaded on first use and after
        each publication)."""
        with self._lock:
            weights = resolve_weights(self.bundle, self.published)
            if self._model is None or weights != self._key:
                model = load_bundle(self.bundle)  # network_def, image size, classes from the bundle's config
                if weights.fine_tuned:
                    load_state(model.network, weights.path)
                    model.weights = Path(weights.path).resolve()  # not the bundle's model.pt, nor its exports
                self._model, self._key, self.sha256 = model, weights, sha256_prefix(weights.path)
            return self._model, weights, self.sha256
