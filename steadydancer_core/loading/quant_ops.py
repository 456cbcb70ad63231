"""Quantised weights kept packed in memory and dequantised per forward: the packed layer ops and the dequantisers.

Storage formats handled here:

* fp8 ``float8_e4m3fn`` / ``float8_e5m2`` weights, plain or *scaled* (real weight = ``weight.float() * scale``; the
  scale comes from ``<layer>.scale_weight`` or ``<layer>.weight_scale``; ``scale_input`` / ``input_scale`` /
  ``comfy_quant`` / ``scaled_fp8`` entries are consumed).
* GGUF blocks (``gguf_codecs.GGUFTensor``: raw uint8 bytes + quantisation type + logical shape), dequantised by
  ``gguf_codecs.dequantize_gguf``.

``PACKED_OPS`` (``Linear=PackedLinear``) is what loaders build models with when a file holds fp8 / GGUF linear weights:
a ``PackedLinear`` given a packed weight at load time keeps it and upcasts it to the input's dtype inside ``forward``
(LoRA adapters can ride along as an extra low-rank path); given a dense weight it is the plain fused ``Linear``.
The module filler is ``state_dict.load_state_dict_into``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.fused_linear import Linear, activate
from ..models.ops import Ops
from .errors import WeightFileError
from .gguf_codecs import GGUFTensor, dequantize_gguf, logical_shape, storage_type

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


# --------------------------------------------------------------------------------------------------------------
# fp8
# --------------------------------------------------------------------------------------------------------------
def is_fp8(t: torch.Tensor) -> bool:
    """True for float8_e4m3fn / float8_e5m2 tensors."""
    return t.dtype in FP8_DTYPES


def is_packed(t: torch.Tensor) -> bool:
    """True for tensors that stay packed in memory (fp8 or GGUF)."""
    return isinstance(t, GGUFTensor) or is_fp8(t)


def dequantize_tensor(t: torch.Tensor, dtype: torch.dtype, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Any stored tensor (GGUF, fp8 with optional scale, plain float) -> dense ``dtype`` of its logical shape.

    ``scale``: fp32 scalar or per-output-row [out] (real weight = ``t * scale``).
    """
    if isinstance(t, GGUFTensor):
        return dequantize_gguf(t, t.qtype, t.logical_shape, dtype)
    if scale is not None:
        # fp8 values are exact in fp16/bf16, so the upcast is lossless; the product is rounded once in ``dtype``
        # (in fp32 the result is exact), without an fp32 temporary of the whole weight
        s = _broadcast_scale(scale.to(device=t.device, dtype=torch.float32), t.shape)
        if dtype == torch.float32 or not is_fp8(t):
            return (t.to(torch.float32) * s).to(dtype)
        return t.to(dtype).mul_(s.to(dtype))
    return t.to(dtype)


def _broadcast_scale(scale: torch.Tensor, shape) -> torch.Tensor:
    """Per-tensor scalar or per-output-row scale -> broadcastable against a weight of ``shape``."""
    if scale.numel() == 1:
        return scale.reshape(())
    if scale.numel() == shape[0]:
        return scale.reshape(shape[0], *([1] * (len(shape) - 1)))
    raise WeightFileError(f"fp8 weight scale with {scale.numel()} elements does not fit a weight of shape {tuple(shape)}")


# --------------------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------------------
class LoraAdapter(nn.Module):
    """Low-rank update ``scale * up @ down``: down [r, in], up [out, r]. Buffers, so they follow the module."""

    def __init__(self, down: torch.Tensor, up: torch.Tensor, scale: float):
        super().__init__()
        self.register_buffer("down", down)
        self.register_buffer("up", up)
        self.scale = float(scale)

    def delta(self, dtype: torch.dtype) -> torch.Tensor:
        """Dense weight update [out, in]."""
        return (self.up.to(torch.float32) @ self.down.to(torch.float32) * self.scale).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.down.to(x.dtype)), self.up.to(x.dtype)) * self.scale


class PackedLinear(Linear):
    """``ops.Linear`` of packed files: an fp8 or GGUF weight stays packed and is dequantised to the input's dtype per
    call; a dense weight makes it exactly the plain fused ``Linear``.

    Built like ``nn.Linear(in_features, out_features, bias)`` (parameters on meta under ``empty_init``); the loader
    hands it a packed weight with ``load_packed_weight``. x [..., in_features] -> [..., out_features]. Packed
    ``weight`` is fp8 [out, in] (with an optional fp32 ``scale_weight``, a scalar or [out]) or GGUF bytes uint8
    [out, bytes] with ``qtype`` naming the GGUF type. State-dict keys are ``weight`` / ``bias`` either way.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device, dtype)
        self.qtype: str | None = None          # storage type of a packed weight; None while the weight is dense
        self.register_buffer("scale_weight", None)
        self.loras = nn.ModuleList()

    @classmethod
    def from_packed(cls, weight: torch.Tensor, bias: torch.Tensor | None,
                    scale: torch.Tensor | None = None) -> "PackedLinear":
        """A layer holding ``weight`` (fp8 or GGUF, logical [out, in]) and ``bias`` [out] as given."""
        out_features, in_features = (int(n) for n in logical_shape(weight))
        layer = cls(in_features, out_features, bias=bias is not None, device="meta")
        layer.load_packed_weight(weight, scale)
        if bias is not None:
            layer.bias = nn.Parameter(bias, requires_grad=False)
        return layer

    @property
    def is_packed(self) -> bool:
        """True while the weight is fp8 or GGUF (LoRA then rides along as an extra path)."""
        return self.qtype is not None

    def load_packed_weight(self, weight: torch.Tensor, scale: torch.Tensor | None = None) -> None:
        """Take an fp8 [out, in] or GGUF (logical [out, in]) weight as it is stored; ``scale``: fp8 scale."""
        if tuple(logical_shape(weight)) != (self.out_features, self.in_features):
            raise WeightFileError(f"packed weight of shape {tuple(logical_shape(weight))} does not fit a linear layer "
                                  f"[{self.out_features}, {self.in_features}]")
        self.qtype = storage_type(weight)
        raw = weight.as_subclass(torch.Tensor) if isinstance(weight, GGUFTensor) else weight
        self.weight = nn.Parameter(raw, requires_grad=False)
        self.scale_weight = None if scale is None else scale.to(torch.float32)

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """Dense [out, in] weight in ``dtype`` (without LoRA)."""
        if not self.is_packed:
            return self.weight.to(dtype)
        if self.weight.dtype == torch.uint8:
            return dequantize_gguf(self.weight, self.qtype, (self.out_features, self.in_features), dtype)
        return dequantize_tensor(self.weight, dtype, self.scale_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_packed and not self.loras:
            return super().forward(x)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        out = F.linear(x, self.dequantized_weight(x.dtype), bias)
        for adapter in self.loras:
            out = out + adapter(x)
        return out

    def forward_activation(self, x: torch.Tensor, activation: str | None) -> torch.Tensor:
        if not self.is_packed and not self.loras:
            return super().forward_activation(x, activation)
        return activate(self.forward(x), activation)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, qtype={self.qtype}"


PACKED_OPS = Ops(Linear=PackedLinear)
"""Layer factories of models loaded from files with fp8 / GGUF linear weights."""


def packed_linears(module: nn.Module) -> dict[str, PackedLinear]:
    """Module name -> ``PackedLinear`` for every layer of ``module`` that holds a packed (fp8 / GGUF) weight."""
    return {n: m for n, m in module.named_modules() if isinstance(m, PackedLinear) and m.is_packed}
