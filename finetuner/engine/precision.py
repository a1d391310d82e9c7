"""The one precision rule of every recipe: which number format a run computes in."""

from __future__ import annotations

import torch

from ..config import PRECISIONS


def native_bf16(device: str = "auto") -> bool:
    """Whether `device` computes bf16 matmuls natively: a CUDA GPU with bf16, or a CPU with
    AVX512-BF16 or AMX. Elsewhere bf16 is emulated and slower than fp32."""
    kind = str(device).split(":")[0]
    if kind in ("auto", "cuda") and torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    if kind in ("mps", "cuda"):
        return False
    cpu = getattr(torch, "cpu", None)
    return any(getattr(cpu, f, lambda: False)() for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def resolve_precision(precision: str, device: str = "auto") -> str:
    """"auto" becomes "bf16" where the hardware has native bf16, else "fp16" on a CUDA GPU
    without it (with loss scaling), else "fp32"; any other value is checked and returned.

    Raises:
        ValueError: an unknown precision.
    """
    if precision not in PRECISIONS and precision != "no":
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return "fp32" if precision == "no" else precision
    if native_bf16(device):
        return "bf16"
    kind = str(device).split(":")[0]
    return "fp16" if kind in ("auto", "cuda") and torch.cuda.is_available() else "fp32"
