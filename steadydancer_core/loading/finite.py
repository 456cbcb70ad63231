"""NaN / Inf in weights, found when a tensor is loaded instead of after a whole sampling step.

``nonfinite(t)`` is exact and cheap: a float tensor's sum is finite exactly when no element is NaN or Inf (barring
an overflow of the sum itself, which the bit test below then settles), so one reduction at memory speed decides
nearly every tensor; fp8 tensors are decided on their bytes (e4m3fn has NaN only, e5m2 Inf and NaN, both in the
top exponent) with two integer maxima. Integer and GGUF block tensors hold no NaN. Measured cost: about a tenth of
the time a tensor takes to be read and cast (``benchmarks/bench_finite_check.py``, ``docs/limits.md``).
"""
from __future__ import annotations

import torch

from .errors import WeightFileError

# float dtype -> (same-size integer dtype, mask without the sign bit, smallest non-finite bit pattern)
_FLOAT_BITS = {
    torch.float16: (torch.int16, 0x7FFF, 0x7C00),
    torch.bfloat16: (torch.int16, 0x7FFF, 0x7F80),
    torch.float32: (torch.int32, 0x7FFFFFFF, 0x7F800000),
    torch.float64: (torch.int64, 0x7FFFFFFFFFFFFFFF, 0x7FF0000000000000),
}
# fp8 dtype -> smallest non-finite byte without the sign bit (e4m3fn: 0x7F is NaN; e5m2: 0x7C.. are Inf / NaN)
_FP8_NONFINITE = {torch.float8_e4m3fn: 0x7F, torch.float8_e5m2: 0x7C}


def nonfinite(t: torch.Tensor) -> bool:
    """True when the tensor holds a NaN or an Inf (float16 / bfloat16 / float32 / float64 / fp8 e4m3fn / e5m2)."""
    if not isinstance(t, torch.Tensor) or t.numel() == 0 or t.is_meta:
        return False
    if t.dtype in _FP8_NONFINITE:
        low = _FP8_NONFINITE[t.dtype]
        raw = t.view(torch.uint8)
        return int(raw.view(torch.int8).max()) >= low or int(raw.max()) >= 0x80 + low
    if t.dtype not in _FLOAT_BITS:
        return False
    if bool(torch.isfinite(t.sum())):
        return False
    integer, mask, first = _FLOAT_BITS[t.dtype]
    return int(t.contiguous().view(integer).bitwise_and(mask).max()) >= first


def check_finite(t: torch.Tensor, name: str, what: str, stored: torch.Tensor | None = None) -> None:
    """``WeightFileError`` when ``t`` (a tensor as loaded; ``stored``: the file's tensor it was cast from) holds NaN
    or Inf, naming the tensor and the fix."""
    if not nonfinite(t):
        return
    if stored is not None and stored is not t and not nonfinite(stored):
        raise WeightFileError(f"{what}: tensor '{name}' overflows {str(t.dtype).replace('torch.', '')} (its values "
                              "are too large for it); load it with precision bf16 or fp32")
    raise WeightFileError(f"{what}: tensor '{name}' holds NaN or Inf values, so every video would come out black or "
                          "as noise; the file is damaged: download it again or use another file")
