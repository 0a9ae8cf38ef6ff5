"""Import MONAI without the start-up time of the modules it imports for features covseg's infer path never uses.

``import monai`` imports nearly every MONAI submodule (``monai/__init__.py``), and several of those import heavy
modules at once for one name each (``python -X importtime``, 2-core Zen 3, after ``import torch``):

- ignite's ``handlers/checkpoint.py``: ``torch.distributed.optim`` (FSDP, DTensor, sympy; ~0.85 s) for one
  ``isinstance`` test against ``ZeroRedundancyOptimizer`` when a checkpoint is saved;
- ``monai.data.ultrasound_confidence_map`` and ``monai.transforms.signal``: ``scipy.signal`` (~0.67 s, scipy.stats
  with it) for ``hilbert`` and ``iirnotch``;
- ``monai.utils.jupyter_utils`` and others: ``matplotlib.pyplot`` (~0.4 s) for their plotting helpers;
- ``monai.transforms.utils``: ``skimage.morphology`` / ``measure`` / ``exposure`` (~0.3 s);
- ``monai.metrics.embedding_collapse``: ``sklearn.metrics`` / ``sklearn.linear_model`` (~0.6 s with ``sklearn``);
- ``monai.metrics.utils`` and ``monai.data.image_writer``: ``scipy.spatial`` (``KDTree``) and ``itk`` (~0.1 s each);
- ``monai.metrics.panoptic_quality`` and ``monai.data.ultrasound_confidence_map``: ``scipy.optimize`` and
  ``scipy.sparse`` (~0.25 s together) for ``linear_sum_assignment``, ``csc_matrix`` and ``spsolve``;
- ``monai.visualize.img2tensorboard`` and ``monai.handlers.tensorboard_handlers``: ``torch.utils.tensorboard``
  (~0.09 s) for ``SummaryWriter``; ``monai.bundle.scripts``: ``requests`` (~0.06 s) for downloads;
- nibabel (imported by MONAI, or first by covseg's reader through :func:`import_deferring`): ``pydicom`` (~0.1 s)
  for its NIfTI DICOM extension; covseg imports pydicom itself only for a DICOM input.

:func:`import_monai` imports MONAI while ``sys.modules`` holds a stand-in for each of those modules (only for
packages that are installed and modules not imported yet). A stand-in's names are deferred: calling one, an
``isinstance`` / ``issubclass`` test against one, or reading an attribute of one imports the real module and uses
the real object. The stand-ins leave ``sys.modules`` as soon as MONAI is imported, so any later import gets the
real module, and MONAI's features that use these names behave as they always did (only later).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

__all__ = ["DEFERRED_MODULES", "import_deferring", "import_monai"]

DEFERRED_MODULES = (
    "torch.distributed.optim",
    "scipy.signal",
    "scipy.spatial",
    "scipy.optimize",
    "scipy.sparse",
    "scipy.sparse.linalg",
    "scipy.sparse.csgraph",
    "torch.utils.tensorboard",
    "tensorboard.compat.proto.summary_pb2",
    "requests",
    "pydicom",
    "matplotlib",
    "matplotlib.pyplot",
    "skimage.morphology",
    "skimage.measure",
    "skimage.exposure",
    "skimage.segmentation",
    "sklearn",
    "sklearn.metrics",
    "sklearn.linear_model",
    "itk",
)
_importing = False  # true while import_monai imports MONAI: the stand-ins then defer every name they are asked for


def _real_module(name: str) -> types.ModuleType:
    """The real module ``name``, imported now if only its stand-in (or its package's) is there."""
    parts = name.split(".")
    for end in range(1, len(parts) + 1):  # a stand-in package is no package: its real submodules need the real one
        prefix = ".".join(parts[:end])
        if getattr(sys.modules.get(prefix), "__covseg_stand_in__", False):
            del sys.modules[prefix]
    return importlib.import_module(name)


class _Deferred:
    """Stands for ``module.name``: calls, type tests and attributes use the real object, imported on first use."""

    def __init__(self, module: str, name: str) -> None:
        self._where = (module, name)

    def _real(self) -> Any:
        module, name = self._where
        return getattr(_real_module(module), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._real()(*args, **kwargs)

    def __instancecheck__(self, obj: object) -> bool:
        return isinstance(obj, self._real())

    def __subclasscheck__(self, sub: type) -> bool:
        return issubclass(sub, self._real())

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return getattr(self._real(), attribute)

    def __repr__(self) -> str:
        return "<covseg deferred {}.{}>".format(*self._where)


def _stand_in(name: str) -> types.ModuleType:
    module = types.ModuleType(name, "covseg's stand-in while MONAI is imported (covseg.monai_import)")
    module.__covseg_stand_in__ = True

    def attribute_of(attribute: str) -> Any:  # PEP 562
        if attribute.startswith("__"):  # the import machinery's probes (__path__, __file__, ...) find nothing
            raise AttributeError(attribute)
        if _importing:  # a name bound at import (``from m import f``, ``optional_import``): deferred
            return _Deferred(name, attribute)
        return getattr(_real_module(name), attribute)  # a later read through a module kept by MONAI: the real one

    module.__getattr__ = attribute_of
    return module


def _can_defer(name: str) -> bool:
    """Not imported yet, and its package installed (so that MONAI's availability flags stay true)."""
    return name not in sys.modules and importlib.util.find_spec(name.partition(".")[0]) is not None


def import_monai() -> types.ModuleType:
    """``import monai``, with the stand-ins above while it runs (plain ``import monai`` when MONAI is imported)."""
    return import_deferring("monai")


def import_deferring(name: str, deferred: tuple[str, ...] = DEFERRED_MODULES) -> types.ModuleType:
    """``import name`` with stand-ins for ``deferred`` while it runs. covseg imports nibabel so too, before MONAI,
    with ``deferred=("pydicom",)``: nibabel imports pydicom (and pydicom requests) for its DICOM extension alone.
    Name only modules whose parent packages ``name`` imports anyway: binding a stand-in imports its parents."""
    if name in sys.modules:
        return sys.modules[name]
    global _importing
    stand_ins = {module: _stand_in(module) for module in deferred if _can_defer(module)}
    sys.modules.update(stand_ins)
    parents = _bind_to_parents(stand_ins)
    _importing = True
    try:
        return importlib.import_module(name)
    finally:
        _importing = False
        for module, stand_in in stand_ins.items():
            if sys.modules.get(module) is stand_in:
                del sys.modules[module]
        for parent, attribute in parents:
            if getattr(getattr(parent, attribute, None), "__covseg_stand_in__", False):
                delattr(parent, attribute)


def _bind_to_parents(stand_ins: dict[str, types.ModuleType]) -> list[tuple[types.ModuleType, str]]:
    """Set each stand-in as an attribute of its parent package (imported now, or a stand-in), as an import would,
    so that ``getattr(matplotlib, "pyplot")`` finds it too (``monai.visualize`` asks so); returns what was set."""
    bound = []
    for name, stand_in in stand_ins.items():
        parent_name, _, attribute = name.rpartition(".")
        if not parent_name:
            continue
        parent = stand_ins.get(parent_name) or importlib.import_module(parent_name)  # MONAI imports it anyway
        if attribute not in vars(parent):
            setattr(parent, attribute, stand_in)
            bound.append((parent, attribute))
    return bound
