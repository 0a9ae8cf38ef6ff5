"""pydicom 3 compatibility for pydicom-seg 0.4.1, which MONAI Label 0.8.5 imports for its DICOM-SEG writer.

pydicom-seg imports ``pydicom._storage_sopclass_uids``, a private module that pydicom 3 removed (its UIDs now live
in ``pydicom.uid``; MONAI Label issue #1841). Importing this module first registers a stand-in under the old
name that serves those UIDs from ``pydicom.uid``. It must be imported before ``monailabel``, in the server and in
the train subprocess; ``covseg.apps.monailabel`` does so on import.
"""

from __future__ import annotations

import sys
import types

import pydicom.uid

OLD_MODULE = "pydicom._storage_sopclass_uids"


def install() -> None:
    """Register ``pydicom._storage_sopclass_uids`` (a view of ``pydicom.uid``) unless pydicom still ships it."""
    if OLD_MODULE in sys.modules:
        return
    try:
        __import__(OLD_MODULE)
        return
    except ImportError:
        pass
    module = types.ModuleType(OLD_MODULE, "pydicom 2's SOP class UIDs, served from pydicom.uid (covseg shim)")

    def __getattr__(name: str) -> pydicom.uid.UID:
        try:
            value = getattr(pydicom.uid, name)
        except AttributeError:
            raise AttributeError(f"module {OLD_MODULE!r} has no attribute {name!r}") from None
        if not isinstance(value, pydicom.uid.UID):
            raise AttributeError(f"module {OLD_MODULE!r} has no attribute {name!r}")
        return value

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[OLD_MODULE] = module


install()
