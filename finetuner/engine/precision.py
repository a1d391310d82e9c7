"""The one precision rule of every recipe: which number format a run computes in."""

from __future__ import annotations

import functools
import time

import torch

from ..config import PRECISIONS

# bf16 must beat fp32 matmuls by this much before "auto" picks it on a CPU: autocast adds casts
# around every op, and bf16 costs accuracy, so a tie goes to fp32.
CPU_BF16_MIN_SPEEDUP = 1.25


def _cpu_has_bf16_instructions() -> bool:
    cpu = getattr(torch, "cpu", None)
    return any(getattr(cpu, f, lambda: False)() for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup(repeats: int = 7) -> float:
    """bf16 matmul throughput over fp32 matmul throughput, measured on this CPU with the current
    torch thread count.

    The shape is a small transformer's feed-forward product (2048 tokens x 384 -> 1536, the
    width of MiniLM / BERT-small). The two dtypes are timed in turn, `repeats` times each, and
    each one's fastest time counts, so a burst of load from another process cannot decide the
    ratio (timing one dtype after the other gave 2.6x once under load where the true ratio was
    0.8x). Measured once a process (about 0.45 s on 2 cores) and cached. A CPU that advertises
    AVX512-BF16 can run bf16 GEMMs slower than fp32 (the 2-core machine of the README:
    0.5-0.9x), which is why "auto" times the hardware rather than trusting its flags.

    Returns:
        float: > 1 where bf16 is faster.
    """
    gen = torch.Generator().manual_seed(0)
    a32, b32 = torch.randn(2048, 384, generator=gen), torch.randn(384, 1536, generator=gen)
    pairs = {torch.float32: (a32, b32), torch.bfloat16: (a32.bfloat16(), b32.bfloat16())}
    best = {dtype: float("inf") for dtype in pairs}
    for a, b in pairs.values():
        a @ b  # first calls: thread pool, kernel selection, page faults
    for _ in range(repeats):
        for dtype, (a, b) in pairs.items():
            start = time.perf_counter()
            a @ b
            best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[torch.float32] / best[torch.bfloat16]


def native_bf16(device: str = "auto") -> bool:
    """Whether `device` computes bf16 matmuls natively and faster than fp32: a CUDA GPU with
    bf16, or a CPU with AVX512-BF16 or AMX whose measured bf16 matmul throughput is at least
    `CPU_BF16_MIN_SPEEDUP` times its fp32 one (`cpu_bf16_speedup`). Elsewhere bf16 is emulated or
    no faster, and fp32 is the better choice."""
    kind = str(device).split(":")[0]
    if kind in ("auto", "cuda") and torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    if kind in ("mps", "cuda"):
        return False
    return _cpu_has_bf16_instructions() and cpu_bf16_speedup() >= CPU_BF16_MIN_SPEEDUP


def resolve_precision(precision: str, device: str = "auto") -> str:
    """"auto" becomes "bf16" where the hardware has native, faster bf16 (`native_bf16`), else
    "fp16" on a CUDA GPU without it (with loss scaling), else "fp32"; any other value is checked
    and returned.

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
