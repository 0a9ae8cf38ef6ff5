"""Find a bundle's ONNX export without building its torch network first.

:func:`covseg.engines.runtime.onnx_runtime.onnx_runtime_network` names an export by the built network's weights, so
every run used to build the network (and load and hash its weights) before it could look in the cache: about 0.7 s of
the start-up on a 2-core Zen 3. Here a *recipe* names what the export was made from: the bundle's ``network_def``,
the bytes of its weights file, the input size, the source of ``covseg.networks`` and of the exporter, and the torch,
MONAI and ONNX Runtime versions. After an export (or a run that found one), :func:`remember_recipe` writes a small
JSON file under the cache's ``recipes/`` naming the export; the next run with the same recipe opens that export at
once (:func:`cached_bundle_runtime`). Any change to those inputs changes the recipe, and the network is built and
looked up (or exported) as before. A multi-class bundle's recipe holds its binary bundle's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from covseg.engines.runtime.onnx_runtime import OnnxRuntimeNetwork, cache_dir
from covseg.io.atomic import atomic_path
from covseg.io.errors import CovsegInputError

__all__ = ["NETWORK_SOURCES", "cached_bundle_runtime", "recipe_key", "remember_recipe", "sources_digest"]

log = logging.getLogger(__name__)

NETWORK_SOURCES = Path(__file__).resolve().parents[2] / "networks"
_SOURCES = (NETWORK_SOURCES, Path(__file__).resolve().with_name("onnx_runtime.py"),
            Path(__file__).resolve().with_name("onnx_template.py"))
_PACKAGES = ("torch", "monai", "onnxruntime", "onnx")
# Part of every recipe key. 2: recipes written before it may name the export of a `--weights` run (covseg infer
# remembered any export of the bundle's network as the bundle's), so they are not read.
RECIPE_FORMAT = "2"


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "-"


def sources_digest(sources: tuple[Path, ...] = _SOURCES) -> str:
    """A digest of the Python files in ``sources`` (folders and files); by default what a cached export is made
    from: the source of ``covseg.networks``, of the exporter and of the ONNX templates."""
    digest = hashlib.sha256()
    for source in sources:
        for path in sorted(source.rglob("*.py")) if source.is_dir() else [source]:
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def recipe_key(bundle_dir: str | Path, image_size: int, parser=None) -> str | None:
    """What a bundle's export is made from, as a name; ``None`` for a bundle without weights, or whose inference
    config (or its prior bundle's) cannot be read. ``parser``: the bundle's, when already read. A multi-class
    bundle's recipe holds its prior bundle's recipe at the prior's own input size."""
    from covseg.networks.loading import bundle_meta, bundle_parser, prior_bundle_of

    bundle_dir = Path(bundle_dir)
    try:
        parser = parser if parser is not None else bundle_parser(bundle_dir)
        network_def = parser.get("network_def")
        meta = parser.get("covseg", {}) or {}
        prior_dir = prior_bundle_of(bundle_dir, meta)
        prior_parser = bundle_parser(prior_dir) if prior_dir is not None else None
    except Exception:  # noqa: BLE001 - the full load will say what is wrong with the bundle
        return None
    if network_def is None:
        return None
    parts = [f"recipe-format={RECIPE_FORMAT}",
             json.dumps(network_def, sort_keys=True, default=str), json.dumps(meta, sort_keys=True, default=str),
             _file_digest(bundle_dir / "models" / "model.pt"), str(int(image_size)), sources_digest(),
             *(f"{p}={_version(p)}" for p in _PACKAGES)]
    if prior_dir is not None:
        prior_size = int(bundle_meta(prior_parser, prior_dir).get("image_size", 352))
        prior_key = recipe_key(prior_dir, prior_size, prior_parser)
        if prior_key is None:
            return None
        parts.append(prior_key)
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def _recipe_file(key: str, cache: str | Path | None) -> Path:
    return _exports(cache) / "recipes" / f"{key}.json"


def _exports(cache: str | Path | None) -> Path:
    """The folder of the exports: ``cache``, else :func:`covseg.engines.runtime.onnx_runtime.cache_dir`."""
    return Path(cache) if cache is not None else cache_dir()


def cached_bundle_runtime(bundle_dir: str | Path, image_size: int, threads: int | None = None,
                          cache: str | Path | None = None, parser=None) -> OnnxRuntimeNetwork | None:
    """The bundle's export, opened in ONNX Runtime, when a recipe names one that exists; else ``None``."""
    key = recipe_key(bundle_dir, image_size, parser)
    if key is None:
        return None
    recipe = _recipe_file(key, cache)
    try:
        entry = json.loads(recipe.read_text(encoding="utf-8"))
        path = recipe.parent.parent / str(entry["onnx"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not path.is_file():
        return None
    try:
        runtime = OnnxRuntimeNetwork(path, threads=threads, out_channels=entry.get("out_channels"))
    except RuntimeError as exc:  # a damaged export: the full load finds it by its weights key and says so
        log.info("recipe %s: %s", recipe, exc)
        return None
    runtime.flip_average = bool(entry.get("flip_average", False))
    return runtime


def remember_recipe(bundle_dir: str | Path, image_size: int, runtime: OnnxRuntimeNetwork,
                    cache: str | Path | None = None, key: str | None = None) -> None:
    """Write the recipe file naming ``runtime``'s export (nothing for an export outside this cache, or in a
    read-only cache). ``key``: the bundle's :func:`recipe_key`, when already known."""
    try:  # an export in the cache, or in a folder of it (a filled template: covseg.engines.runtime.onnx_template)
        where = runtime.onnx_path.resolve().relative_to(_exports(cache).resolve()).as_posix()
    except ValueError:
        return
    key = key if key is not None else recipe_key(bundle_dir, image_size)
    if key is None:
        return
    recipe = _recipe_file(key, cache)
    entry = {"onnx": where, "out_channels": getattr(runtime, "out_channels", None),
             "flip_average": bool(getattr(runtime, "flip_average", False))}
    with contextlib.suppress(OSError, CovsegInputError), atomic_path(recipe) as tmp:
        tmp.write_text(json.dumps(entry), encoding="utf-8")
