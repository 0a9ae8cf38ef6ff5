"""Import MONAI without the start-up time that ignite's ZeRO type test costs, with the same behaviour.

``import monai`` imports nearly every MONAI submodule (``monai/__init__.py``), ignite's handlers among them.
ignite's ``handlers/checkpoint.py`` imports ``torch.distributed.optim`` for one name, ``ZeroRedundancyOptimizer``,
which it uses in one ``isinstance`` test when a checkpoint is saved. That import pulls in FSDP, DTensor and sympy:
about 0.85 s of a 3.4 s MONAI import (``python -X importtime``, Zen 3), on the way to ``covseg infer``'s first slice.

:func:`import_monai` imports MONAI while ``sys.modules`` holds a stand-in for ``torch.distributed.optim`` whose
``ZeroRedundancyOptimizer`` answers ``isinstance`` / ``issubclass`` by importing the real class on first use (any
other name imports the real module at once). The stand-in leaves ``sys.modules`` as soon as MONAI is imported, so a
later ``import torch.distributed.optim`` gets the real module, and ignite's test gives what it always gave.
"""

from __future__ import annotations

import importlib
import sys
import types

__all__ = ["import_monai"]

_OPTIM = "torch.distributed.optim"


def _real_optim() -> types.ModuleType:
    """The real ``torch.distributed.optim``, imported now if only the stand-in is there."""
    if getattr(sys.modules.get(_OPTIM), "__covseg_stand_in__", False):
        del sys.modules[_OPTIM]
    return importlib.import_module(_OPTIM)


class _LazyClassCheck(type):
    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, _real_optim().ZeroRedundancyOptimizer)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, _real_optim().ZeroRedundancyOptimizer)


class _ZeroRedundancyOptimizer(metaclass=_LazyClassCheck):
    """Stands for ``torch.distributed.optim.ZeroRedundancyOptimizer``: type tests and construction use the real one."""

    def __new__(cls, *args, **kwargs):
        return _real_optim().ZeroRedundancyOptimizer(*args, **kwargs)


def _stand_in() -> types.ModuleType:
    module = types.ModuleType(_OPTIM, "covseg's stand-in while MONAI is imported (covseg.monai_import)")
    module.__covseg_stand_in__ = True
    module.ZeroRedundancyOptimizer = _ZeroRedundancyOptimizer
    module.__getattr__ = _other_name  # PEP 562
    return module


def _other_name(name: str) -> object:
    """Any other public name of the stand-in: the real module's (the import machinery's probes, such as
    ``__path__``, find nothing)."""
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(_real_optim(), name)


def import_monai() -> types.ModuleType:
    """``import monai``, with the stand-in above when neither MONAI nor ``torch.distributed.optim`` is imported yet."""
    if "monai" in sys.modules or _OPTIM in sys.modules:
        return importlib.import_module("monai")
    import torch.distributed  # noqa: F401 - the stand-in's parent package, imported as usual

    stand_in = sys.modules[_OPTIM] = _stand_in()
    try:
        return importlib.import_module("monai")
    finally:
        if sys.modules.get(_OPTIM) is stand_in:
            del sys.modules[_OPTIM]
