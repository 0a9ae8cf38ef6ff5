"""Device helpers: mixed precision only where the hardware runs it fast."""

from __future__ import annotations

import contextlib

import torch

from covseg.options import as_flag


def bf16_fast(device: torch.device | str = "cpu") -> bool:
    """True when bf16 autocast is worth it: CUDA with bf16, or a CPU whose oneDNN has native bf16 kernels.

    On CPUs without AVX-512-BF16/AMX (e.g. AVX2-only machines) bf16 convolutions fall back to a slow reference
    kernel (measured 10x slower than fp32 here), so ``"auto"`` precision picks fp32 there.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_bf16(setting: bool | str, device: torch.device | str = "cpu") -> bool:
    """Turn a ``True`` / ``False`` / ``"auto"`` precision setting (also ``"true"``/``"false"`` from overrides) into a
    decision."""
    if isinstance(setting, str) and setting.strip().lower() == "auto":
        return bf16_fast(device)
    return as_flag(setting, "bf16")


def autocast_context(device: torch.device | str, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on the device when ``bf16``, else a no-op."""
    device = torch.device(device)
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
