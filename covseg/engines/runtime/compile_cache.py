"""Inductor's on-disk kernel cache for ``torch.compile`` on CPU, one folder per instruction set.

Inductor caches the C++ kernels it compiles under ``$TORCHINDUCTOR_CACHE_DIR`` (default
``/tmp/torchinductor_<user>``), and in torch 2.13 a kernel compiled for one vector instruction set can be reused by
a process that picked another (``ATEN_CPU_CAPABILITY`` set or not, or a cache folder shared by machines with
different CPUs): the reused kernels then compute wrong maps or corrupt the heap (measured on an AMD Zen 4:
docs/benchmarks.md, 2026-12-04 afternoon). :func:`use_isa_cache` gives each instruction set its own folder under
inductor's default one, unless the user chose a folder.
"""

from __future__ import annotations

import os
import re

import torch

__all__ = ["isa_tag", "use_isa_cache"]

ENV = "TORCHINDUCTOR_CACHE_DIR"


def isa_tag() -> str:
    """The vector instruction set inductor compiles for in this process and ATen's CPU capability, as a folder
    name (e.g. ``avx512-avx512_vnni.AVX512``)."""
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    isa = str(pick_vec_isa()).strip() or "novec"
    return re.sub(r"[^A-Za-z0-9_.]+", "-", f"{isa}.{torch.backends.cpu.get_cpu_capability()}")


def use_isa_cache() -> str:
    """Point inductor's cache at ``<its default folder>/covseg-<isa_tag()>`` unless ``$TORCHINDUCTOR_CACHE_DIR``
    names another folder (the user's choice stands); returns the folder in use. Call before the first compile.

    ``$TORCHINDUCTOR_CACHE_DIR`` equal to the default folder counts as unset: torch writes it there itself the first
    time anything asks for the cache (an ONNX export does), so it is no sign of a choice.
    """
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    default = os.path.abspath(default_cache_dir())
    chosen = os.environ.get(ENV)
    if chosen and os.path.abspath(chosen) != default:
        return chosen
    folder = os.path.join(default, f"covseg-{isa_tag()}")
    os.environ[ENV] = folder
    return folder
