"""Quantised weights kept packed in memory and dequantised per forward, plus the generic state-dict loader.

Storage formats handled here:

* fp8 ``float8_e4m3fn`` / ``float8_e5m2`` weights, plain or *scaled* (real weight = ``weight.float() * scale``; the
  scale comes from ``<layer>.scale_weight`` or ``<layer>.weight_scale``; ``scale_input`` / ``input_scale`` /
  ``comfy_quant`` / ``scaled_fp8`` entries are consumed).
* GGUF blocks (``GGUFTensor``: raw uint8 bytes + quantisation type + logical shape). Q8_0, Q4_K, Q5_K and Q6_K have
  (and Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K) torch dequantisers (any device); other GGUF types fall back to the ``gguf`` package's numpy code on CPU.

``PackedLinear`` replaces ``nn.Linear`` when the stored weight is fp8 or GGUF: it keeps the packed weight and upcasts
it to the input's dtype inside ``forward``. LoRA adapters can ride along as an extra low-rank path.

``load_state_dict_into(module, sd, compute_dtype)`` fills a module built with ``empty_init()`` (parameters on the meta
device) from any name -> tensor mapping, swapping layers as needed, and raises one ``StateDictMismatchError`` that lists
every missing key, unexpected key and shape mismatch by name.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)

# suffixes that carry quantisation side information for ``<layer>.weight`` (never module parameters)
WEIGHT_SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
CONSUMED_SUFFIXES = (".scale_input", ".input_scale", ".comfy_quant")
SCALED_FP8_MARKER = "scaled_fp8"
QUANT_METADATA_KEY = "_quantization_metadata"    # safetensors header entry: {"layers": {name: {"format": ...}}}
COMFY_QUANT_FP8_FORMATS = {"float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2}

# GGUF block geometry: type name -> (elements per block, bytes per block)
GGUF_BLOCKS = {"Q8_0": (32, 34), "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24),
               "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210)}


class WeightFileError(ValueError):
    """A weight file that cannot be used; the message names the file, the problem and the fix."""


class StateDictMismatchError(WeightFileError):
    """Keys or shapes of a state dict do not fit the model; lists every offending name."""

    def __init__(self, message: str, missing=(), unexpected=(), mismatched=()):
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)


# --------------------------------------------------------------------------------------------------------------
# GGUF tensors
# --------------------------------------------------------------------------------------------------------------
class GGUFTensor(torch.Tensor):
    """Raw GGUF bytes (uint8 [..., bytes]) tagged with ``qtype`` (e.g. "Q4_K") and the logical ``logical_shape``.

    Only a carrier between file reading and ``load_state_dict_into``; any torch op returns a plain uint8 tensor.
    """

    __torch_function__ = torch._C._disabled_torch_function_impl

    @staticmethod
    def __new__(cls, raw: torch.Tensor, qtype: str, logical_shape):
        obj = torch.Tensor._make_subclass(cls, raw, False)
        obj.qtype = qtype
        obj.logical_shape = torch.Size(logical_shape)
        return obj


def is_fp8(t: torch.Tensor) -> bool:
    return t.dtype in FP8_DTYPES


def is_packed(t: torch.Tensor) -> bool:
    """True for tensors that stay packed in memory (fp8 or GGUF)."""
    return isinstance(t, GGUFTensor) or is_fp8(t)


def logical_shape(t: torch.Tensor) -> torch.Size:
    return t.logical_shape if isinstance(t, GGUFTensor) else t.shape


def _f16(col: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 2] -> float32 [N, 1] (little-endian fp16)."""
    return col.contiguous().view(torch.float16).float()


def _dq_q8_0(b: torch.Tensor) -> torch.Tensor:
    d = _f16(b[:, :2])
    q = b[:, 2:].contiguous().view(torch.int8).float()
    return d * q


def _low_high(qs: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 16] -> int [N, 32]: low nibbles are elements 0..15, high nibbles 16..31."""
    q = qs.to(torch.int32)
    return torch.cat([q & 0xF, q >> 4], dim=1)


def _fifth_bits(qh: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 4] (little-endian uint32) -> int [N, 32]: bit j is the 5th bit of element j."""
    bytes_ = qh.to(torch.int32)
    word = bytes_[:, 0] | (bytes_[:, 1] << 8) | (bytes_[:, 2] << 16) | (bytes_[:, 3] << 24)
    return (word[:, None] >> torch.arange(32, device=qh.device, dtype=torch.int32)[None]) & 1


def _dq_q4_0(b: torch.Tensor) -> torch.Tensor:
    return _f16(b[:, :2]) * (_low_high(b[:, 2:18]) - 8).float()


def _dq_q4_1(b: torch.Tensor) -> torch.Tensor:
    return _f16(b[:, :2]) * _low_high(b[:, 4:20]).float() + _f16(b[:, 2:4])


def _dq_q5_0(b: torch.Tensor) -> torch.Tensor:
    q = _low_high(b[:, 6:22]) | (_fifth_bits(b[:, 2:6]) << 4)
    return _f16(b[:, :2]) * (q - 16).float()


def _dq_q5_1(b: torch.Tensor) -> torch.Tensor:
    q = _low_high(b[:, 8:24]) | (_fifth_bits(b[:, 4:8]) << 4)
    return _f16(b[:, :2]) * q.float() + _f16(b[:, 2:4])


def _k_scales(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unpack the 12-byte 6-bit scales/mins of Q4_K / Q5_K: uint8 [N, 12] -> sc, m int [N, 8]."""
    s = s.to(torch.int32)
    lo, mid, hi = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = torch.cat([lo & 63, (hi & 0xF) | ((lo >> 6) << 4)], dim=1)
    m = torch.cat([mid & 63, (hi >> 4) | ((mid >> 6) << 4)], dim=1)
    return sc.float(), m.float()


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 128] -> int [N, 8, 32]: sub-block 2c = low nibbles of chunk c, 2c+1 = high nibbles."""
    q = qs.to(torch.int32).reshape(-1, 4, 1, 32)
    return torch.cat([q & 0xF, q >> 4], dim=2).reshape(-1, 8, 32)


def _two_bit_planes(qs: torch.Tensor) -> torch.Tensor:
    """Q2_K/Q3_K low bits: uint8 [N, 64] -> int [N, 2, 4, 32] (half, shift group, position)."""
    q = qs.to(torch.int32).reshape(-1, 2, 1, 32)
    shifts = 2 * torch.arange(4, device=qs.device, dtype=torch.int32)[None, None, :, None]
    return (q >> shifts) & 3


def _per16(scales: torch.Tensor) -> torch.Tensor:
    """[N, 16] scales of 16-element groups -> [N, 2, 4, 32] aligned with ``_two_bit_planes``."""
    return scales.reshape(-1, 2, 4, 2).repeat_interleave(16, dim=3)


def _dq_q2_k(b: torch.Tensor) -> torch.Tensor:
    sc = b[:, 0:16].to(torch.int32)
    d, dmin = _f16(b[:, 80:82]), _f16(b[:, 82:84])
    scale, minimum = _per16((d * (sc & 0xF)).float()), _per16((dmin * (sc >> 4)).float())
    return (scale * _two_bit_planes(b[:, 16:80]).float() - minimum).reshape(-1, 256)


def _dq_q3_k(b: torch.Tensor) -> torch.Tensor:
    hmask = b[:, 0:32].to(torch.int32)
    s = b[:, 96:108].to(torch.int32)
    lo, mid, top = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = torch.cat([(lo & 0xF) | ((top & 3) << 4), (mid & 0xF) | (((top >> 2) & 3) << 4),
                    (lo >> 4) | (((top >> 4) & 3) << 4), (mid >> 4) | (((top >> 6) & 3) << 4)], dim=1) - 32
    d = _f16(b[:, 108:110])
    bits = (hmask[:, None, :] >> torch.arange(8, device=b.device, dtype=torch.int32)[None, :, None]) & 1
    q = _two_bit_planes(b[:, 32:96]) - 4 * (1 - bits.reshape(-1, 2, 4, 32))
    return (_per16((d * sc).float()) * q.float()).reshape(-1, 256)


def _dq_q4_k(b: torch.Tensor) -> torch.Tensor:
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, m = _k_scales(b[:, 4:16])
    q = _nibbles(b[:, 16:144]).float()
    y = (d * sc)[:, :, None] * q - (dmin * m)[:, :, None]
    return y.reshape(-1, 256)


def _dq_q5_k(b: torch.Tensor) -> torch.Tensor:
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, m = _k_scales(b[:, 4:16])
    qh = b[:, 16:48].to(torch.int32)
    bits = (qh[:, None, :] >> torch.arange(8, device=b.device, dtype=torch.int32)[None, :, None]) & 1
    q = (_nibbles(b[:, 48:176]) + 16 * bits).float()
    y = (d * sc)[:, :, None] * q - (dmin * m)[:, :, None]
    return y.reshape(-1, 256)


def _dq_q6_k(b: torch.Tensor) -> torch.Tensor:
    ql = b[:, 0:128].to(torch.int32).reshape(-1, 2, 2, 32)
    qh = b[:, 128:192].to(torch.int32).reshape(-1, 2, 32)
    sc = b[:, 192:208].contiguous().view(torch.int8).float()
    d = _f16(b[:, 208:210])
    low, high = ql & 0xF, ql >> 4
    q = torch.stack([
        low[:, :, 0] | ((qh & 3) << 4),
        low[:, :, 1] | (((qh >> 2) & 3) << 4),
        high[:, :, 0] | (((qh >> 4) & 3) << 4),
        high[:, :, 1] | (((qh >> 6) & 3) << 4),
    ], dim=2).reshape(-1, 16, 16).float() - 32
    return (d[:, :, None] * sc[:, :, None] * q).reshape(-1, 256)


_TORCH_DEQUANT = {"Q8_0": _dq_q8_0, "Q4_0": _dq_q4_0, "Q4_1": _dq_q4_1, "Q5_0": _dq_q5_0, "Q5_1": _dq_q5_1,
                  "Q2_K": _dq_q2_k, "Q3_K": _dq_q3_k, "Q4_K": _dq_q4_k, "Q5_K": _dq_q5_k, "Q6_K": _dq_q6_k}


def dequantize_gguf(raw: torch.Tensor, qtype: str, shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """GGUF bytes uint8 [..., bytes] -> dense tensor of ``shape`` in ``dtype`` (computed in fp32)."""
    shape = torch.Size(shape)
    if qtype in _TORCH_DEQUANT:
        _, nbytes = GGUF_BLOCKS[qtype]
        blocks = raw.reshape(-1, nbytes)
        out = _TORCH_DEQUANT[qtype](blocks)
    else:
        import gguf

        qt = gguf.GGMLQuantizationType[qtype]
        arr = gguf.quants.dequantize(raw.detach().cpu().numpy(), qt)
        out = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).to(raw.device)
    return out.reshape(shape).to(dtype)


def dequantize_tensor(t: torch.Tensor, dtype: torch.dtype, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Any stored tensor (GGUF, fp8 with optional scale, plain float) -> dense ``dtype``."""
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
# GGUF quantisers (reference-quality, for writing test and demo files; ggml's own tools do better rounding)
# --------------------------------------------------------------------------------------------------------------
def _round_div(x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return torch.where(d != 0, torch.round(x / torch.where(d != 0, d, torch.ones_like(d))), torch.zeros_like(x))


def _fp16_bytes(v: torch.Tensor) -> torch.Tensor:
    return v.to(torch.float16).reshape(-1, 1).contiguous().view(torch.uint8)


def _q_q8_0(x: torch.Tensor) -> torch.Tensor:
    x = x.reshape(-1, 32)
    d = (x.abs().amax(dim=1, keepdim=True) / 127).to(torch.float16).float()
    q = _round_div(x, d).clamp(-127, 127).to(torch.int8).view(torch.uint8)
    return torch.cat([_fp16_bytes(d), q], dim=1)


def _k_pack_scales(sc: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Inverse of ``_k_scales``: int [N, 8] (0..63) -> uint8 [N, 12]."""
    lo = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    mid = m[:, :4] | ((m[:, 4:] >> 4) << 6)
    hi = (sc[:, 4:] & 0xF) | ((m[:, 4:] & 0xF) << 4)
    return torch.cat([lo, mid, hi], dim=1).to(torch.uint8)


def _q_k_affine(x: torch.Tensor, qmax: int):
    """Shared Q4_K / Q5_K quantisation: x [N, 256] -> (d, dmin bytes, packed scales, q int [N, 8, 32])."""
    x = x.reshape(-1, 8, 32)
    mn = x.amin(dim=2).clamp(max=0)
    s = (x.amax(dim=2) - mn) / qmax
    d = (s.amax(dim=1, keepdim=True) / 63).to(torch.float16).float()
    dmin = ((-mn).amax(dim=1, keepdim=True) / 63).to(torch.float16).float()
    sc = _round_div(s, d).clamp(0, 63).to(torch.int32)
    m = _round_div(-mn, dmin).clamp(0, 63).to(torch.int32)
    step = (d * sc)[:, :, None]
    q = _round_div(x + (dmin * m)[:, :, None], step).clamp(0, qmax).to(torch.int32)
    head = torch.cat([_fp16_bytes(d), _fp16_bytes(dmin), _k_pack_scales(sc, m)], dim=1)
    return head, q


def _pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    q = q.reshape(-1, 4, 2, 32)
    return (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128).to(torch.uint8)


def _q_q4_k(x: torch.Tensor) -> torch.Tensor:
    head, q = _q_k_affine(x, 15)
    return torch.cat([head, _pack_nibbles(q)], dim=1)


def _q_q5_k(x: torch.Tensor) -> torch.Tensor:
    head, q = _q_k_affine(x, 31)
    shifts = torch.arange(8, dtype=torch.int32)[None, :, None]
    qh = (((q >> 4) & 1) << shifts).sum(dim=1).to(torch.uint8)
    return torch.cat([head, qh, _pack_nibbles(q & 0xF)], dim=1)


def _q_q6_k(x: torch.Tensor) -> torch.Tensor:
    x = x.reshape(-1, 16, 16)
    s = x.abs().amax(dim=2) / 31
    d = (s.amax(dim=1, keepdim=True) / 127).to(torch.float16).float()
    sc = _round_div(s, d).clamp(-128, 127)
    q = (_round_div(x, (d * sc)[:, :, None]).clamp(-32, 31) + 32).to(torch.int32).reshape(-1, 2, 4, 32)
    low = q & 0xF
    ql = torch.stack([low[:, :, 0] | (low[:, :, 2] << 4), low[:, :, 1] | (low[:, :, 3] << 4)], dim=2)
    hb = q >> 4
    qh = hb[:, :, 0] | (hb[:, :, 1] << 2) | (hb[:, :, 2] << 4) | (hb[:, :, 3] << 6)
    return torch.cat([
        ql.reshape(-1, 128).to(torch.uint8), qh.reshape(-1, 64).to(torch.uint8),
        sc.to(torch.int8).view(torch.uint8), _fp16_bytes(d),
    ], dim=1)


_TORCH_QUANT = {"Q8_0": _q_q8_0, "Q4_K": _q_q4_k, "Q5_K": _q_q5_k, "Q6_K": _q_q6_k}


def quantize_gguf(x: torch.Tensor, qtype: str) -> np.ndarray:
    """Dense [..., n] (n a multiple of the block size) -> GGUF bytes uint8 [..., bytes] as a numpy array."""
    if qtype not in _TORCH_QUANT:
        raise ValueError(f"no quantiser for GGUF type {qtype}; supported: {sorted(_TORCH_QUANT)}")
    block, nbytes = GGUF_BLOCKS[qtype]
    if x.shape[-1] % block:
        raise ValueError(f"{qtype} needs the last dimension to be a multiple of {block}, got shape {tuple(x.shape)}")
    rows = x.reshape(-1, x.shape[-1]).to(torch.float32)
    packed = _TORCH_QUANT[qtype](rows.reshape(-1, block))
    return packed.reshape(*x.shape[:-1], (x.shape[-1] // block) * nbytes).numpy()


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


class PackedLinear(nn.Module):
    """Linear layer with an fp8 or GGUF weight kept packed; dequantised to the input's dtype per call.

    x [..., in_features] -> [..., out_features]. ``weight`` is fp8 [out, in] (with an optional fp32 ``scale_weight``)
    or GGUF bytes uint8 [out, bytes] with ``qtype`` naming the GGUF type.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor | None = None):
        super().__init__()
        shape = logical_shape(weight)
        self.out_features, self.in_features = int(shape[0]), int(shape[1])
        self.qtype = weight.qtype if isinstance(weight, GGUFTensor) else str(weight.dtype).replace("torch.", "")
        raw = weight.as_subclass(torch.Tensor) if isinstance(weight, GGUFTensor) else weight
        self.register_buffer("weight", raw)
        self.register_buffer("scale_weight", None if scale is None else scale.to(torch.float32))
        self.register_buffer("bias", bias)
        self.loras = nn.ModuleList()

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """Dense [out, in] weight in ``dtype`` (without LoRA)."""
        if self.weight.dtype == torch.uint8:
            return dequantize_gguf(self.weight, self.qtype, (self.out_features, self.in_features), dtype)
        return dequantize_tensor(self.weight, dtype, self.scale_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        out = F.linear(x, self.dequantized_weight(x.dtype), bias)
        for adapter in self.loras:
            out = out + adapter(x)
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, qtype={self.qtype}"


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def empty_init() -> Iterator[None]:
    """Build modules with parameters on the meta device (no memory, no random init); buffers stay real.

    Buffers computed at construction (rotary tables, constants) keep their values; parameters are filled later by
    ``load_state_dict_into``.
    """
    original = nn.Module.register_parameter

    def register_parameter(module, name, param):
        original(module, name, param)
        if param is not None:
            p = module._parameters[name]
            module._parameters[name] = nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)

    nn.Module.register_parameter = register_parameter
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def _shape_of(sd: Mapping, key: str) -> torch.Size:
    getter = getattr(sd, "shape_of", None)
    return torch.Size(getter(key)) if getter is not None else logical_shape(sd[key])


def _comfy_quant_format(t: torch.Tensor, key: str) -> str:
    try:
        return json.loads(bytes(t.to(torch.uint8).tolist()).decode("utf-8")).get("format", "")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise WeightFileError(f"unreadable quantisation descriptor '{key}': {exc}") from exc


def _check_quantization_metadata(metadata: Mapping) -> None:
    """Newer ComfyUI files list quantised layers in the safetensors header: only fp8 formats are supported."""
    raw = metadata.get(QUANT_METADATA_KEY)
    if not raw:
        return
    try:
        layers = (json.loads(raw) if isinstance(raw, str) else raw).get("layers", {})
    except (json.JSONDecodeError, AttributeError) as exc:
        raise WeightFileError(f"unreadable '{QUANT_METADATA_KEY}' in the file header: {exc}") from exc
    formats = {str(v.get("format", "")) if isinstance(v, dict) else str(v) for v in layers.values()}
    unsupported = sorted(formats - set(COMFY_QUANT_FP8_FORMATS))
    if unsupported:
        raise WeightFileError(f"the file uses quantisation format(s) {unsupported}, which are not supported; use an "
                              f"fp8 ({', '.join(COMFY_QUANT_FP8_FORMATS)}), fp16/bf16 or GGUF file instead")


def split_quant_entries(sd: Mapping) -> tuple[dict[str, str], set[str]]:
    """Find fp8 side entries. Returns (weight name -> scale key, keys consumed as side information).

    Raises for quantisation formats other than fp8 (``comfy_quant`` descriptors such as nvfp4).
    """
    _check_quantization_metadata(getattr(sd, "metadata", None) or {})
    scales: dict[str, str] = {}
    consumed: set[str] = set()
    for key in sd.keys():
        if key == SCALED_FP8_MARKER:
            consumed.add(key)
            continue
        for suffix in WEIGHT_SCALE_SUFFIXES:
            if key.endswith(suffix):
                scales[key[: -len(suffix)] + ".weight"] = key
                consumed.add(key)
        for suffix in CONSUMED_SUFFIXES:
            if key.endswith(suffix):
                consumed.add(key)
                if suffix == ".comfy_quant":
                    fmt = _comfy_quant_format(sd[key], key)
                    if fmt not in COMFY_QUANT_FP8_FORMATS:
                        raise WeightFileError(
                            f"'{key}' declares quantisation format '{fmt}', which is not supported; "
                            f"use an fp8 ({', '.join(COMFY_QUANT_FP8_FORMATS)}), fp16/bf16 or GGUF file instead")
    return scales, consumed


def check_state_dict(module: nn.Module, sd: Mapping, strict: bool = True, what: str = "model") -> set[str]:
    """Compare names and shapes (no tensor data is read). Returns the consumed side keys; raises on problems."""
    expected = {k: v.shape for k, v in module.state_dict(keep_vars=True).items()}
    _, consumed = split_quant_entries(sd)
    keys = set(sd.keys())
    missing = sorted(k for k in expected if k not in keys)
    unexpected = sorted(k for k in keys - consumed if k not in expected)
    mismatched = []
    for k in sorted(expected):
        if k in keys:
            got = _shape_of(sd, k)
            if tuple(got) != tuple(expected[k]):
                mismatched.append(f"{k}: file {tuple(got)} vs model {tuple(expected[k])}")
    if mismatched or (strict and (missing or unexpected)):
        parts = [f"the weights do not fit the {what}:"]
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es): {_listing(mismatched)}")
        parts.append("Check that the file is the right component and model size.")
        raise StateDictMismatchError("\n".join(parts), missing, unexpected, mismatched)
    return consumed


def _listing(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")


def _set_tensor(owner: nn.Module, leaf: str, value: torch.Tensor) -> None:
    if leaf in owner._parameters:
        owner._parameters[leaf] = nn.Parameter(value, requires_grad=False)
    else:
        owner._buffers[leaf] = value


def _cast(t: torch.Tensor, compute_dtype: torch.dtype, scale: torch.Tensor | None) -> torch.Tensor:
    if is_packed(t) or scale is not None:
        return dequantize_tensor(t, compute_dtype, scale)
    return t.to(compute_dtype) if t.is_floating_point() else t


def load_state_dict_into(module: nn.Module, sd: Mapping, compute_dtype: torch.dtype = torch.bfloat16,
                         strict: bool = True, what: str = "model") -> nn.Module:
    """Fill ``module`` from ``sd`` (name -> tensor; may be a lazy mapping that reads tensors on access).

    Floating tensors become ``compute_dtype``; an exact ``nn.Linear`` whose stored weight is fp8 or GGUF becomes a
    ``PackedLinear`` (weight kept packed, bias in ``compute_dtype``); other fp8/GGUF tensors are dequantised.
    Tensors are read one at a time, so peak memory is the model plus one tensor. Returns ``module``.
    Raises ``StateDictMismatchError`` listing missing / unexpected keys and shape mismatches.
    """
    check_state_dict(module, sd, strict=strict, what=what)
    scales, _ = split_quant_entries(sd)
    keys = set(sd.keys())
    modules = dict(module.named_modules())
    done: set[str] = set()
    for name in list(module.state_dict(keep_vars=True).keys()):
        if name in done or name not in keys:
            continue
        owner_name, _, leaf = name.rpartition(".")
        owner = modules[owner_name]
        scale = sd[scales[name]] if name in scales else None
        tensor = sd[name]
        if type(owner) is nn.Linear and leaf == "weight" and is_packed(tensor):
            bias_name = f"{owner_name}.bias" if owner_name else "bias"
            bias = _cast(sd[bias_name], compute_dtype, None) if owner.bias is not None and bias_name in keys else None
            packed = PackedLinear(tensor, bias, scale)
            parent_name, _, child = owner_name.rpartition(".")
            modules[parent_name]._modules[child] = packed
            modules[owner_name] = packed
            done.update({name, bias_name})
            continue
        _set_tensor(owner, leaf, _cast(tensor, compute_dtype, scale))
        done.add(name)
    leftover = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if leftover:
        raise StateDictMismatchError(
            f"{len(leftover)} tensor(s) of the {what} were never filled: {_listing(leftover)}. "
            "Build the model inside empty_init() so computed buffers are kept, and load a complete file.",
            missing=leftover)
    return module


def packed_linears(module: nn.Module) -> dict[str, PackedLinear]:
    return {n: m for n, m in module.named_modules() if isinstance(m, PackedLinear)}

