"""Device helpers: mixed precision only where the hardware runs it fast.

``$COVSEG_PRECISION`` (``fp32``, ``bf16`` or ``auto``) decides what an ``"auto"`` precision setting means, so the
whole test suite or a batch can be run under one forced precision; explicit ``True``/``False`` settings win.
"""

from __future__ import annotations

import contextlib
import os

import torch

from covseg.options import as_flag

__all__ = ["PRECISION_ENV", "autocast_context", "bf16_fast", "onednn_isa_cap", "precision_name", "resolve_bf16"]

PRECISION_ENV = "COVSEG_PRECISION"
_PRECISIONS = ("auto", "fp32", "bf16")
# oneDNN's ISA caps (``$ONEDNN_MAX_CPU_ISA``) below which it has no native bf16 convolution kernels
_ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def onednn_isa_cap() -> str | None:
    """The instruction set oneDNN is capped at by ``$ONEDNN_MAX_CPU_ISA`` (or its old name ``$DNNL_MAX_CPU_ISA``),
    upper case; None when uncapped."""
    value = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    return None if value in ("", "ALL", "DEFAULT") else value


def bf16_fast(device: torch.device | str = "cpu") -> bool:
    """True when bf16 autocast is worth it: CUDA with bf16, or a CPU whose oneDNN has native bf16 kernels.

    On CPUs without AVX-512-BF16/AMX (e.g. AVX2-only machines) bf16 convolutions fall back to a slow reference
    kernel (measured 10x slower than fp32 here), so ``"auto"`` precision picks fp32 there. The same holds when
    oneDNN is capped below AVX-512-BF16 (:func:`onednn_isa_cap`), whatever the CPU has.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if onednn_isa_cap() in _ISAS_WITHOUT_BF16:
        return False
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _env_precision() -> str:
    value = os.environ.get(PRECISION_ENV, "auto").strip().lower() or "auto"
    if value not in _PRECISIONS:
        raise ValueError(f"${PRECISION_ENV}={value!r}: expected one of {', '.join(_PRECISIONS)}")
    return value


def resolve_bf16(setting: bool | str, device: torch.device | str = "cpu") -> bool:
    """Turn a ``True`` / ``False`` / ``"auto"`` precision setting (also ``"true"``/``"false"``/``"fp32"``/``"bf16"``
    from overrides) into a decision. ``"auto"`` follows ``$COVSEG_PRECISION`` when set, else :func:`bf16_fast`."""
    if isinstance(setting, str):
        text = setting.strip().lower()
        if text == "auto":
            text = _env_precision()
            if text == "auto":
                return bf16_fast(device)
        if text in ("fp32", "bf16"):
            return text == "bf16"
    return as_flag(setting, "bf16")


def precision_name(bf16: bool) -> str:
    """``"bf16"`` or ``"fp32"``: the name recorded in reports."""
    return "bf16" if bf16 else "fp32"


def autocast_context(device: torch.device | str, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on the device when ``bf16``, else a no-op."""
    device = torch.device(device)
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
