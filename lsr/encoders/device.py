"""Where models run: device and dtype resolution, and the CPU's bf16 capability.

torch is imported when these are called, not when this module is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lsr.errors import InputError


def resolve_device(device: str, dtype: str = "auto") -> tuple[Any, Any]:
    """(torch.device, torch.dtype); ``auto``: CUDA when available (bf16 where supported, else
    fp16), CPU float32."""
    import torch

    if device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise InputError(f"bad device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available")
    if dtype == "auto":
        if dev.type == "cuda":
            return dev, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return dev, torch.float32
    return dev, getattr(torch, dtype)


_NATIVE_BF16: bool | None = None


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: oneDNN runs bf16 matmuls natively (else they are emulated, slow)."""
    global _NATIVE_BF16
    if _NATIVE_BF16 is None:
        import torch

        try:
            _NATIVE_BF16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            _NATIVE_BF16 = False
        if _NATIVE_BF16 and Path("/proc/cpuinfo").exists():  # oneDNN also says yes for AVX512 core
            flags = Path("/proc/cpuinfo").read_text(errors="ignore")
            _NATIVE_BF16 = "avx512_bf16" in flags or "amx_bf16" in flags
    return _NATIVE_BF16
