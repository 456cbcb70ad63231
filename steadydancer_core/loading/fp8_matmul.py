"""Multiplying in fp8: an fp8 e4m3 weight times the input quantised to e4m3 per tensor, with ``torch._scaled_mm``.

``fp8_linear(x, weight, weight_scale, input_scale, bias)`` computes ``x @ (weight * weight_scale)^T + bias`` as
``_scaled_mm(q(x), weight^T, s_x, weight_scale)``, where ``q(x) = clamp(x / s_x, +-448)`` in e4m3 and ``s_x`` is the
file's ``input_scale`` (a calibrated per-tensor scale) or, without one, the dynamic ``amax(|x|) / 448`` (rounded up
to a power of two). The weight stays as stored: its transpose is the column-major second operand ``_scaled_mm``
wants.

``scaled_mm_supported(device)`` is the device policy: CUDA (not ROCm) with compute capability 8.9 or newer (Ada,
Hopper, Blackwell). ``layer_blocker`` names what keeps one layer on the upcast path. The packed layers
(``quant_ops.PackedLinear``) use both; everything else upcasts the weight.
"""
from __future__ import annotations

import torch

E4M3_MAX = float(torch.finfo(torch.float8_e4m3fn).max)       # 448
MIN_CAPABILITY = (8, 9)
DIM_MULTIPLE = 16              # _scaled_mm: in_features and out_features must be multiples of 16
OUTPUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
FUSED_BIAS_DTYPES = (torch.bfloat16, torch.float16)          # _scaled_mm adds a bias of the output dtype


def scaled_mm_supported(device) -> bool:
    """Whether fp8 matrix products run on ``device``: CUDA with compute capability >= 8.9 (not ROCm)."""
    device = torch.device(device)
    if device.type != "cuda" or torch.version.hip is not None or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device) >= MIN_CAPABILITY


def device_blocker(device) -> str | None:
    """Why ``device`` cannot multiply in fp8 (a phrase for the report), or None when it can."""
    device = torch.device(device)
    if scaled_mm_supported(device):
        return None
    if device.type == "cuda" and torch.cuda.is_available() and torch.version.hip is None:
        major, minor = torch.cuda.get_device_capability(device)
        return (f"{torch.cuda.get_device_name(device)} has compute capability {major}.{minor}; fp8 matmul needs "
                f"{MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} or newer (RTX 40xx, L4/L40, H100 and later)")
    return f"the model runs on {device.type}, where fp8 matmul is not used (it needs an NVIDIA GPU of compute " \
           f"capability {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} or newer)"


def layer_blocker(qtype: str | None, weight_scale: torch.Tensor | None, out_features: int, in_features: int,
                  full_precision_mm: bool = False) -> str | None:
    """Why one packed layer stays on the upcast path (a short reason for the report), or None when it can
    multiply in fp8: an e4m3 weight with a per-tensor scale, both dimensions multiples of 16, and no
    full-precision request from the file."""
    if qtype != "float8_e4m3fn":
        return "e5m2 weights" if qtype == "float8_e5m2" else f"{qtype} weights"
    if full_precision_mm:
        return "the file asks for full-precision matmul"
    if weight_scale is not None and weight_scale.numel() != 1:
        return "per-row weight scales"
    if out_features % DIM_MULTIPLE or in_features % DIM_MULTIPLE:
        return f"dimensions not multiples of {DIM_MULTIPLE}"
    return None


def quantize_input(x: torch.Tensor, input_scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, K] (bf16 / fp16 / fp32) -> (e4m3 [N, K], fp32 scalar scale s) with x ~ e4m3 * s.

    ``input_scale``: the file's calibrated scale; without one, the dynamic amax(|x|) / 448 rounded up to a power of
    two, so the division is exact in any dtype. Values beyond +-448 * s saturate. The division runs in x's dtype
    (no fp32 copy of the activations) as a product with 1 / s rounded to that dtype, and s is returned as the exact
    inverse of that factor, so a rounded factor does not scale the result; s is floored so that 1 / s stays finite.
    """
    top = torch.finfo(x.dtype).max
    if input_scale is None:
        amax = torch.linalg.vector_norm(x, float("inf")).to(torch.float32).clamp(min=E4M3_MAX / top)   # no |x| copy
        scale = torch.exp2(torch.ceil(torch.log2(amax / E4M3_MAX)))
    else:
        scale = input_scale.to(device=x.device, dtype=torch.float32).reshape(())
    inverse = (1.0 / scale).clamp(max=top).to(x.dtype)
    return (x * inverse).clamp_(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn), 1.0 / inverse.to(torch.float32)


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor | None,
               input_scale: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
    """x [..., in] @ (weight * weight_scale)^T + bias -> [..., out] in x's dtype, multiplied in fp8.

    weight: float8_e4m3fn [out, in] (row-major, as stored); weight_scale: fp32 scalar or None (1); input_scale:
    fp32 scalar or None (dynamic); bias [out] or None.
    """
    lead, k = x.shape[:-1], x.shape[-1]
    q, scale_a = quantize_input(x.reshape(-1, k).contiguous(), input_scale)
    scale_b = (weight_scale.to(device=x.device, dtype=torch.float32).reshape(()) if weight_scale is not None
               else torch.ones((), device=x.device, dtype=torch.float32))
    fused = bias is not None and x.dtype in FUSED_BIAS_DTYPES
    out = torch._scaled_mm(q, weight.t(), scale_a=scale_a, scale_b=scale_b,
                           bias=bias.to(x.dtype) if fused else None, out_dtype=x.dtype)
    if bias is not None and not fused:
        out = out + bias.to(x.dtype)
    return out.reshape(*lead, weight.shape[0])
