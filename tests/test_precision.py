"""The precision rule: "auto" picks bf16 only where the hardware computes it faster than fp32."""

import math

import pytest

from finetuner.engine import precision as P


def test_speedup_is_measured_once_and_positive():
    first = P.cpu_bf16_speedup()
    assert math.isfinite(first) and first > 0
    assert P.cpu_bf16_speedup() == first  # cached: one measurement a process


@pytest.mark.parametrize("flags, speedup, expected", [
    (True, 3.0, "bf16"),   # AMX-class CPU: bf16 far faster
    (True, 0.5, "fp32"),   # AVX512-BF16 advertised but slower than fp32 (a virtualised Xeon here)
    (True, 1.1, "fp32"),   # a tie goes to fp32
    (False, 3.0, "fp32"),  # no bf16 instructions: emulated
])
def test_auto_follows_the_measured_speed(monkeypatch, flags, speedup, expected):
    monkeypatch.setattr(P, "_cpu_has_bf16_instructions", lambda: flags)
    monkeypatch.setattr(P, "cpu_bf16_speedup", lambda: speedup)
    assert P.resolve_precision("auto", "cpu") == expected


def test_explicit_precision_is_kept_and_checked():
    assert P.resolve_precision("bf16", "cpu") == "bf16"
    assert P.resolve_precision("no", "cpu") == "fp32"
    with pytest.raises(ValueError, match="precision: expected one of"):
        P.resolve_precision("int4", "cpu")
