"""Infection priors for the multi-class heads: the binary model's probability maps, computed once and cached.

A head trained on priors of slices the binary model was trained on sees near-perfect maps, while at test time
the maps are noisy. ``perturb`` draws priors from perturbed copies of the slice (blur, noise, a different display
window, a coarser resolution), which makes the binary model err like it does on unseen slices; several draws per
slice are kept and training picks one at random each time (:class:`covseg.transforms.priors.PickPriord`).
``crossfit`` instead reads out-of-fold maps (:func:`out_of_fold_priors`): each slice's map from a binary model
trained without it, which errs on it as the shipped model errs on unseen slices.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from covseg.engines.inference.predictor import SlicePredictor
from covseg.io.atomic import atomic_path

log = logging.getLogger(__name__)

PERTURBATIONS = ("none", "input")


def perturb_slice(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A randomly degraded copy of a [0, 1] slice: display window, blur or coarser resolution, noise."""
    t = torch.from_numpy(np.ascontiguousarray(grey, dtype=np.float32))[None, None]
    t = t * rng.uniform(0.75, 1.2) + rng.uniform(-0.08, 0.12)
    if rng.random() < 0.5:
        sigma = rng.uniform(0.8, 2.0)
        radius = int(np.ceil(2.5 * sigma))
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        k = torch.exp(-x ** 2 / (2 * sigma ** 2))
        k = k / k.sum()
        t = F.conv2d(F.pad(t, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        t = F.conv2d(F.pad(t, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
    else:
        h, w = t.shape[-2:]
        f = rng.uniform(0.4, 0.7)
        small = F.interpolate(t, size=(max(8, int(h * f)), max(8, int(w * f))), mode="bilinear", align_corners=False)
        t = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    t = t + torch.from_numpy(rng.normal(0.0, rng.uniform(0.01, 0.04), size=t.shape).astype(np.float32))
    return t.clamp(0, 1)[0, 0].numpy()


def compute_priors(network: nn.Module, images: list[np.ndarray], image_size: int = 352, draws: int = 1,
                   perturb: str = "none", seed: int = 0, bf16: bool | str = "auto",
                   batch_size: int = 8) -> list[np.ndarray]:
    """Per image, ``draws`` infection probability maps (draws, H, W) float16 at the image's size."""
    if perturb not in PERTURBATIONS:
        raise ValueError(f"perturb must be one of {PERTURBATIONS}, got {perturb!r}")
    if perturb == "none" and draws != 1:
        raise ValueError("clean priors are deterministic: use draws=1")
    predictor = SlicePredictor(network, image_size=image_size, batch_size=batch_size, bf16=bf16,
                               channels_last=False)
    rng = np.random.default_rng(seed)
    out: list[list[np.ndarray]] = [[] for _ in images]
    for _ in range(draws):
        inputs = images if perturb == "none" else [perturb_slice(im, rng) for im in images]
        for i, prob in enumerate(predictor.predict(inputs)):
            out[i].append(prob[0].astype(np.float16))
    return [np.stack(maps) for maps in out]


def _check_shape(file: Path, item: dict, prior: np.ndarray, hint: str = "") -> None:
    """Refuse a prior (read from ``file``) whose size is not its slice's."""
    if prior.shape[-2:] != item["image"].shape[-2:]:
        raise ValueError(f"{file}: prior of {item['name']} has shape {prior.shape[-2:]}, "
                         f"image {item['image'].shape[-2:]}{hint}")


def cached_priors(network: nn.Module, items: list[dict], cache_file: str | Path, **kwargs) -> list[dict]:
    """``items`` with ``"prior"`` (draws, H, W) added, read from ``cache_file`` (.npz by item name) or computed
    once with :func:`compute_priors` (``kwargs``) and saved atomically."""
    cache_file = Path(cache_file)
    names = [it["name"] for it in items]
    cached: dict[str, np.ndarray] = {}
    if cache_file.exists():
        with np.load(cache_file) as z:
            cached = {k: z[k] for k in z.files}
    missing = [it for it in items if it["name"] not in cached]
    if missing:
        log.info("computing %d infection priors into %s", len(missing), cache_file)
        maps = compute_priors(network, [it["image"][0] for it in missing], **kwargs)
        cached.update({it["name"]: m for it, m in zip(missing, maps)})
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache_file) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **cached)
    for it, name in zip(items, names):
        _check_shape(cache_file, it, cached[name], " (stale cache?)")
    return [{**it, "prior": cached[it["name"]]} for it in items]


def out_of_fold_priors(networks: list[nn.Module], parts: list[list[dict]],
                       image_size: int = 352) -> dict[str, np.ndarray]:
    """``{name: (1, H, W) float16 map}`` over ``parts`` (the held-out items of each fold), each part's maps by the
    network of its fold (trained without it)."""
    if len(networks) != len(parts):
        raise ValueError(f"{len(networks)} fold networks for {len(parts)} held-out parts")
    maps: dict[str, np.ndarray] = {}
    for network, part in zip(networks, parts):
        for it, prior in zip(part, compute_priors(network, [it["image"][0] for it in part], image_size=image_size)):
            if it["name"] in maps:
                raise ValueError(f"{it['name']} is held out by two folds")
            maps[it["name"]] = prior
    return maps


def crossfit_items(items: list[dict], crossfit_file: str | Path) -> list[dict]:
    """``items`` with ``"prior"`` and ``"clean_prior"`` (1, H, W): their out-of-fold maps read from
    ``crossfit_file`` (written by ``scripts/crossfit_priors.py``)."""
    crossfit_file = Path(crossfit_file)
    if not crossfit_file.is_file():
        raise FileNotFoundError(f"{crossfit_file}: no out-of-fold priors (make them with scripts/crossfit_priors.py)")
    with np.load(crossfit_file) as z:
        maps = {k: z[k] for k in z.files}
    out = []
    for it in items:
        prior = maps.get(it["name"])
        if prior is None:
            raise ValueError(f"{crossfit_file}: no out-of-fold prior for {it['name']}")
        _check_shape(crossfit_file, it, prior)
        out.append({**it, "prior": prior, "clean_prior": prior})
    return out


def items_with_priors(network: nn.Module, items: list[dict], cache_dir: str | Path, perturb: str = "none",
                      draws: int = 1, image_size: int = 352, seed: int = 0, tag: str = "train",
                      crossfit_file: str | Path | None = None) -> list[dict]:
    """``items`` with ``"prior"`` (draws, H, W) and ``"clean_prior"`` (1, H, W): the binary model's maps on the
    slice as it is, and (``perturb="input"``) on ``draws`` perturbed copies; both cached under ``cache_dir``.
    ``perturb="crossfit"``: the out-of-fold maps of ``crossfit_file`` instead (:func:`crossfit_items`)."""
    if perturb == "crossfit":
        if crossfit_file is None:
            raise ValueError("prior mode 'crossfit' needs the out-of-fold priors file (prior_crossfit)")
        return crossfit_items(items, crossfit_file)
    cache_dir = Path(cache_dir)
    clean = cached_priors(network, items, cache_dir / f"{tag}-clean.npz", image_size=image_size)
    if perturb == "none":
        return [{**it, "clean_prior": it["prior"]} for it in clean]
    noisy = cached_priors(network, items, cache_dir / f"{tag}-{perturb}{draws}-seed{seed}.npz", image_size=image_size,
                          draws=draws, perturb=perturb, seed=seed)
    return [{**n, "clean_prior": c["prior"]} for n, c in zip(noisy, clean)]
