"""Quantised weights kept packed in memory and dequantised per forward: the packed layer ops and the dequantisers.

Storage formats handled here:

* fp8 ``float8_e4m3fn`` / ``float8_e5m2`` weights, plain or *scaled* (real weight = ``weight.float() * scale``; the
  scale comes from ``<layer>.scale_weight`` (KJ) or ``<layer>.weight_scale`` (ComfyUI), with an optional
  per-tensor ``input_scale``).
* nvfp4 (ComfyUI's ``comfy_quant`` format): packed e2m1 pairs + e4m3 block scales + a global scale
  (``nvfp4_codec``); the block scales are kept in plain row order after loading.
* GGUF blocks (``gguf_codecs.GGUFTensor``: raw uint8 bytes + quantisation type + logical shape), dequantised by
  ``gguf_codecs.dequantize_gguf``.

``PACKED_OPS`` (``Linear=PackedLinear``) is what loaders build models with when a file holds packed linear weights:
a ``PackedLinear`` given a packed weight at load time keeps it and upcasts it to the input's dtype inside ``forward``
(LoRA adapters can ride along as an extra low-rank path), or, after ``set_fp8_matmul`` on a GPU that can, multiplies
an e4m3 weight in fp8 (``fp8_matmul.fp8_linear``); given a dense weight it is the plain fused ``Linear``.
The module filler is ``state_dict.load_state_dict_into``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.fused_linear import Linear, activate
from ..models.ops import Ops
from .errors import WeightFileError
from .fp8_matmul import OUTPUT_DTYPES, device_blocker, fp8_linear, layer_blocker
from .gguf_codecs import GGUFTensor, dequantize_gguf, logical_shape, storage_type
from .nvfp4_codec import NVFP4_BLOCK, dequantize_nvfp4, storage_shapes, unswizzle_block_scales

NVFP4 = "nvfp4"            # qtype of nvfp4 layers (ComfyUI's format name)

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
    """``ops.Linear`` of packed files: an fp8, nvfp4 or GGUF weight stays packed and is dequantised to the input's
    dtype per call; a dense weight makes it exactly the plain fused ``Linear``.

    Built like ``nn.Linear(in_features, out_features, bias)`` (parameters on meta under ``empty_init``); the loader
    hands it a packed weight with ``load_packed_weight``. x [..., in_features] -> [..., out_features]. Packed
    ``weight`` is fp8 [out, in] (with an optional fp32 ``scale_weight``, a scalar or [out], and an optional fp32
    scalar ``input_scale``), nvfp4 uint8 [roundup(out, 16), roundup(in, 16) / 2] (``block_scale`` float8_e4m3fn
    [out, ceil(in / 16)], ``scale_weight`` the global fp32 scalar) or GGUF bytes uint8 [out, bytes] with ``qtype``
    naming the GGUF type. Every tensor is a parameter or buffer, so device moves and block swap carry them.
    ``fp8_matmul_device``: the device type on which this layer multiplies in fp8 (``set_fp8_matmul``), else None.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device, dtype)
        self.qtype: str | None = None          # storage type of a packed weight; None while the weight is dense
        self.register_buffer("scale_weight", None)
        self.register_buffer("block_scale", None)
        self.register_buffer("input_scale", None)
        self.full_precision_mm = False         # the file asks for this layer not to multiply in low precision
        self.fp8_matmul_device: str | None = None
        self.loras = nn.ModuleList()

    @classmethod
    def from_packed(cls, weight: torch.Tensor, bias: torch.Tensor | None,
                    scale: torch.Tensor | None = None, **quant) -> "PackedLinear":
        """A layer holding ``weight`` (fp8 or GGUF, logical [out, in]) and ``bias`` [out] as given; ``quant``: the
        keyword arguments of ``load_packed_weight`` (an nvfp4 weight needs ``shape`` there)."""
        out_features, in_features = (int(n) for n in quant.pop("shape", None) or logical_shape(weight))
        layer = cls(in_features, out_features, bias=bias is not None, device="meta")
        layer.load_packed_weight(weight, scale, **quant)
        if bias is not None:
            layer.bias = nn.Parameter(bias, requires_grad=False)
        return layer

    @property
    def is_packed(self) -> bool:
        """True while the weight is fp8, nvfp4 or GGUF (LoRA then rides along as an extra path)."""
        return self.qtype is not None

    def load_packed_weight(self, weight: torch.Tensor, scale: torch.Tensor | None = None, *,
                           qtype: str | None = None, block_scale: torch.Tensor | None = None,
                           input_scale: torch.Tensor | None = None, full_precision_mm: bool = False) -> None:
        """Take a weight as it is stored: fp8 [out, in] (``scale``: its scale), GGUF (logical [out, in]), or with
        ``qtype="nvfp4"`` the packed uint8 weight with ``block_scale`` (blocked layout, as stored) and ``scale``
        (the global ``weight_scale_2``). ``input_scale``: the file's per-tensor input scale (fp8 only)."""
        if qtype == NVFP4:
            self._load_nvfp4(weight, block_scale, scale)
        else:
            if tuple(logical_shape(weight)) != (self.out_features, self.in_features):
                raise WeightFileError(f"packed weight of shape {tuple(logical_shape(weight))} does not fit a linear "
                                      f"layer [{self.out_features}, {self.in_features}]")
            self.qtype = storage_type(weight)
            raw = weight.as_subclass(torch.Tensor) if isinstance(weight, GGUFTensor) else weight
            self.weight = nn.Parameter(raw, requires_grad=False)
            self.scale_weight = None if scale is None else scale.to(torch.float32)
        if input_scale is not None and input_scale.numel() != 1:
            raise WeightFileError(f"input_scale with {input_scale.numel()} elements; it must be one fp32 number")
        self.input_scale = None if input_scale is None else input_scale.to(torch.float32).reshape(())
        self.full_precision_mm = bool(full_precision_mm)

    def _load_nvfp4(self, weight: torch.Tensor, block_scale: torch.Tensor, global_scale: torch.Tensor) -> None:
        packed_shape, scale_shape = storage_shapes(self.out_features, self.in_features)
        if weight.dtype != torch.uint8 or tuple(weight.shape) != packed_shape:
            raise WeightFileError(f"nvfp4 weight {weight.dtype} {tuple(weight.shape)} does not fit a linear layer "
                                  f"[{self.out_features}, {self.in_features}] (expected uint8 {packed_shape})")
        if block_scale is None or block_scale.element_size() != 1 or tuple(block_scale.shape) != scale_shape:
            got = None if block_scale is None else (block_scale.dtype, tuple(block_scale.shape))
            raise WeightFileError(f"nvfp4 block scales {got} do not fit a linear layer [{self.out_features}, "
                                  f"{self.in_features}] (expected float8_e4m3fn {scale_shape})")
        if global_scale is None or global_scale.numel() != 1:
            raise WeightFileError("nvfp4 weight_scale_2 must be one fp32 number")
        blocks = -(-self.in_features // NVFP4_BLOCK)
        self.qtype = NVFP4
        self.weight = nn.Parameter(weight, requires_grad=False)
        plain = unswizzle_block_scales(block_scale.view(torch.float8_e4m3fn), self.out_features, blocks)
        self.block_scale = plain
        self.scale_weight = global_scale.to(torch.float32).reshape(())

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """Dense [out, in] weight in ``dtype`` (without LoRA)."""
        if not self.is_packed:
            return self.weight.to(dtype)
        if self.qtype == NVFP4:
            return dequantize_nvfp4(self.weight, self.block_scale, self.scale_weight,
                                    (self.out_features, self.in_features), dtype)
        if self.weight.dtype == torch.uint8:
            return dequantize_gguf(self.weight, self.qtype, (self.out_features, self.in_features), dtype)
        return dequantize_tensor(self.weight, dtype, self.scale_weight)

    def fp8_matmul_blocker(self) -> str | None:
        """Why this layer cannot multiply in fp8 (``fp8_matmul.layer_blocker``), or None."""
        return layer_blocker(self.qtype, self.scale_weight, self.out_features, self.in_features,
                             self.full_precision_mm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_packed and not self.loras:
            return super().forward(x)
        if self.fp8_matmul_device == x.device.type and x.dtype in OUTPUT_DTYPES:
            out = fp8_linear(x, self.weight, self.scale_weight, self.input_scale, self.bias)
        else:
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
"""Layer factories of models loaded from files with fp8 / nvfp4 / GGUF linear weights."""


def packed_linears(module: nn.Module) -> dict[str, PackedLinear]:
    """Module name -> ``PackedLinear`` for every layer of ``module`` that holds a packed (fp8 / nvfp4 / GGUF) weight."""
    return {n: m for n, m in module.named_modules() if isinstance(m, PackedLinear) and m.is_packed}


def set_fp8_matmul(module: nn.Module, enabled: bool, device, what: str = "the DiT") -> str:
    """Switch fp8 matmul on or off for every packed layer of ``module`` that runs on ``device``; returns the one
    line the loader shows ("" when ``enabled`` is False): which path the fp8 layers take, and why any stay on the
    upcast path (the device, e5m2 weights, shapes ...). Layers whose input arrives on another device type upcast.
    """
    layers = packed_linears(module)
    for layer in layers.values():
        layer.fp8_matmul_device = None
    if not enabled:
        return ""
    fp8 = {n: m for n, m in layers.items() if is_fp8(m.weight)}
    if not fp8:
        kinds = sorted({m.qtype for m in layers.values()}) or ["fp16 / bf16"]
        return f"fp8 matmul: not used - {what} has no fp8 weights ({', '.join(kinds)})"
    device = torch.device(device)
    blocked = device_blocker(device)
    if blocked:
        return f"fp8 matmul: not used - {blocked}; the {len(fp8)} fp8 layers are upcast per layer instead"
    reasons: dict[str, int] = {}
    on = []
    for layer in fp8.values():
        why = layer.fp8_matmul_blocker()
        if why is None:
            layer.fp8_matmul_device = device.type
            on.append(layer)
        else:
            reasons[why] = reasons.get(why, 0) + 1
    calibrated = sum(layer.input_scale is not None for layer in on)
    line = (f"fp8 matmul: {len(on)} of {len(fp8)} fp8 layers multiply in fp8 (torch._scaled_mm; inputs scaled per "
            f"tensor: {calibrated} by the file's input_scale, {len(on) - calibrated} by their amax)")
    if reasons:
        line += "; upcast: " + ", ".join(f"{n} ({why})" for why, n in sorted(reasons.items()))
    return line
