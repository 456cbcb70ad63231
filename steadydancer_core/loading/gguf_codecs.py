"""GGUF block codecs: the carrier tensor, torch dequantisers, reference quantisers and reading helpers.

* ``GGUFTensor``: raw GGUF bytes (uint8 [rows, bytes]) tagged with the quantisation type and the logical shape; what
  the readers hand to ``quant.load_state_dict_into``.
* ``dequantize_gguf``: torch dequantisers for Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (any
  device); other types fall back to the ``gguf`` package's numpy code on CPU.
* ``quantize_gguf``: reference-quality quantisers (Q8_0, Q4_K, Q5_K, Q6_K) for writing test and demo files.
* ``gguf_entry_shape`` / ``gguf_dtype_name`` / ``gguf_tensor``: turn a ``gguf.GGUFReader`` tensor into the logical
  shape, the dtype name and a torch tensor (plain types dense, quantised types as ``GGUFTensor``).

Block layouts follow ggml (llama.cpp ``ggml-quants``); every helper states its byte ranges and shapes.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

# block geometry: type name -> (elements per block, bytes per block)
GGUF_BLOCKS = {"Q8_0": (32, 34), "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24),
               "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210)}
# unquantised GGUF types read as dense torch tensors (BF16 is handled apart: numpy has no bfloat16)
GGUF_PLAIN_TYPES = {"F32": torch.float32, "F16": torch.float16, "F64": torch.float64, "I8": torch.int8,
                    "I16": torch.int16, "I32": torch.int32, "I64": torch.int64}
# ComfyUI-GGUF convention: tensors with more than 4 dims are stored flattened, the real shape in this field
GGUF_ORIG_SHAPE_FIELD = "comfy.gguf.orig_shape.{name}"


# --------------------------------------------------------------------------------------------------------------
# Carrier
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


def logical_shape(t: torch.Tensor) -> torch.Size:
    """The shape a stored tensor stands for: ``logical_shape`` of a ``GGUFTensor``, else ``t.shape``."""
    return t.logical_shape if isinstance(t, GGUFTensor) else t.shape


def dtype_name(dtype: torch.dtype) -> str:
    """torch.float16 -> "float16"."""
    return str(dtype).replace("torch.", "")


def storage_type(t: torch.Tensor) -> str:
    """How a stored tensor is encoded: the GGUF type ("Q4_K") or the torch dtype name ("float8_e4m3fn")."""
    return t.qtype if isinstance(t, GGUFTensor) else dtype_name(t.dtype)


# --------------------------------------------------------------------------------------------------------------
# Dequantisers: uint8 blocks [N, bytes per block] -> float32 [N, elements per block]
# --------------------------------------------------------------------------------------------------------------
def _f16(col: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 2] -> float32 [N, 1] (little-endian fp16)."""
    return col.contiguous().view(torch.float16).float()


def _dq_q8_0(b: torch.Tensor) -> torch.Tensor:
    """Q8_0 [N, 34] = fp16 d | 32 int8 q -> d * q [N, 32]."""
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
    """Q4_0 [N, 18] = fp16 d | 16 bytes of nibbles -> d * (q - 8) [N, 32]."""
    return _f16(b[:, :2]) * (_low_high(b[:, 2:18]) - 8).float()


def _dq_q4_1(b: torch.Tensor) -> torch.Tensor:
    """Q4_1 [N, 20] = fp16 d | fp16 m | 16 bytes of nibbles -> d * q + m [N, 32]."""
    return _f16(b[:, :2]) * _low_high(b[:, 4:20]).float() + _f16(b[:, 2:4])


def _dq_q5_0(b: torch.Tensor) -> torch.Tensor:
    """Q5_0 [N, 22] = fp16 d | 4 bytes of 5th bits | 16 bytes of nibbles -> d * (q - 16) [N, 32]."""
    q = _low_high(b[:, 6:22]) | (_fifth_bits(b[:, 2:6]) << 4)
    return _f16(b[:, :2]) * (q - 16).float()


def _dq_q5_1(b: torch.Tensor) -> torch.Tensor:
    """Q5_1 [N, 24] = fp16 d | fp16 m | 4 bytes of 5th bits | 16 bytes of nibbles -> d * q + m [N, 32]."""
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


def _bit_planes(x: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 32] -> int [N, 8, 32]: entry [n, i, j] is bit i of byte j."""
    x = x.to(torch.int32)
    return (x[:, None, :] >> torch.arange(8, device=x.device, dtype=torch.int32)[None, :, None]) & 1


def _dq_q2_k(b: torch.Tensor) -> torch.Tensor:
    """Q2_K [N, 84] = 16 bytes of 4-bit scale|min | 64 bytes of 2-bit q | fp16 d | fp16 dmin -> [N, 256]."""
    sc = b[:, 0:16].to(torch.int32)
    d, dmin = _f16(b[:, 80:82]), _f16(b[:, 82:84])
    scale, minimum = _per16((d * (sc & 0xF)).float()), _per16((dmin * (sc >> 4)).float())
    return (scale * _two_bit_planes(b[:, 16:80]).float() - minimum).reshape(-1, 256)


def _dq_q3_k(b: torch.Tensor) -> torch.Tensor:
    """Q3_K [N, 110] = 32 bytes of high bits | 64 bytes of 2-bit q | 12 bytes of 6-bit scales | fp16 d -> [N, 256]."""
    s = b[:, 96:108].to(torch.int32)
    lo, mid, top = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = torch.cat([(lo & 0xF) | ((top & 3) << 4), (mid & 0xF) | (((top >> 2) & 3) << 4),
                    (lo >> 4) | (((top >> 4) & 3) << 4), (mid >> 4) | (((top >> 6) & 3) << 4)], dim=1) - 32
    d = _f16(b[:, 108:110])
    q = _two_bit_planes(b[:, 32:96]) - 4 * (1 - _bit_planes(b[:, 0:32]).reshape(-1, 2, 4, 32))
    return (_per16((d * sc).float()) * q.float()).reshape(-1, 256)


def _k_affine(b: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Q4_K / Q5_K scaling: bytes 0..15 = fp16 d | fp16 dmin | 12 bytes of 6-bit scales/mins; q int [N, 8, 32]
    -> d * sc * q - dmin * m [N, 256]."""
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, m = _k_scales(b[:, 4:16])
    y = (d * sc)[:, :, None] * q.float() - (dmin * m)[:, :, None]
    return y.reshape(-1, 256)


def _dq_q4_k(b: torch.Tensor) -> torch.Tensor:
    """Q4_K [N, 144] = 16 bytes of scales (see ``_k_affine``) | 128 bytes of nibbles -> [N, 256]."""
    return _k_affine(b, _nibbles(b[:, 16:144]))


def _dq_q5_k(b: torch.Tensor) -> torch.Tensor:
    """Q5_K [N, 176] = 16 bytes of scales (see ``_k_affine``) | 32 bytes of 5th bits | 128 bytes of nibbles
    -> [N, 256]."""
    return _k_affine(b, _nibbles(b[:, 48:176]) + 16 * _bit_planes(b[:, 16:48]))


def _dq_q6_k(b: torch.Tensor) -> torch.Tensor:
    """Q6_K [N, 210] = 128 bytes of low nibbles | 64 bytes of 2-bit highs | 16 int8 scales | fp16 d -> [N, 256]."""
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


_DEQUANTIZABLE: dict[str, bool] = {}


def is_gguf_quant_type(name: str) -> bool:
    """True for a quantised GGUF type name ("Q4_K", "IQ4_NL", ...); torch dtype names are lower case."""
    return name[:1].isupper() and name not in GGUF_PLAIN_TYPES and name != "BF16"


def can_dequantize(qtype: str) -> bool:
    """Whether ``dequantize_gguf`` can expand GGUF type ``qtype`` (the torch codecs here, else the ``gguf``
    package's, probed once on one zero block; some types, e.g. Q8_K, it does not implement)."""
    if qtype in _TORCH_DEQUANT:
        return True
    if qtype not in _DEQUANTIZABLE:
        import gguf

        try:
            kind = gguf.GGMLQuantizationType[qtype]
            _, nbytes = gguf.GGML_QUANT_SIZES[kind]
            gguf.quants.dequantize(np.zeros((1, nbytes), dtype=np.uint8), kind)
            _DEQUANTIZABLE[qtype] = True
        except (KeyError, NotImplementedError, ValueError, TypeError):
            _DEQUANTIZABLE[qtype] = False
    return _DEQUANTIZABLE[qtype]


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


# --------------------------------------------------------------------------------------------------------------
# GGUF quantisers (reference-quality, for writing test and demo files; ggml's own tools do better rounding)
# --------------------------------------------------------------------------------------------------------------
def _round_div(x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """round(x / d), 0 where d == 0 (broadcasting)."""
    return torch.where(d != 0, torch.round(x / torch.where(d != 0, d, torch.ones_like(d))), torch.zeros_like(x))


def _fp16_bytes(v: torch.Tensor) -> torch.Tensor:
    """float [N, 1] (or [N]) -> uint8 [N, 2] little-endian fp16 (inverse of ``_f16``)."""
    return v.to(torch.float16).reshape(-1, 1).contiguous().view(torch.uint8)


def _q_q8_0(x: torch.Tensor) -> torch.Tensor:
    """float32 [N, 32] -> Q8_0 uint8 [N, 34]."""
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
    """Shared Q4_K / Q5_K quantisation: x [N, 256] -> (head uint8 [N, 16] = fp16 d | fp16 dmin | packed scales,
    q int [N, 8, 32] in 0..qmax)."""
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
    """int [N, 8, 32] in 0..15 -> uint8 [N, 128] (inverse of ``_nibbles``)."""
    q = q.reshape(-1, 4, 2, 32)
    return (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128).to(torch.uint8)


def _q_q4_k(x: torch.Tensor) -> torch.Tensor:
    """float32 [N, 256] -> Q4_K uint8 [N, 144]."""
    head, q = _q_k_affine(x, 15)
    return torch.cat([head, _pack_nibbles(q)], dim=1)


def _q_q5_k(x: torch.Tensor) -> torch.Tensor:
    """float32 [N, 256] -> Q5_K uint8 [N, 176]."""
    head, q = _q_k_affine(x, 31)
    shifts = torch.arange(8, dtype=torch.int32)[None, :, None]
    qh = (((q >> 4) & 1) << shifts).sum(dim=1).to(torch.uint8)
    return torch.cat([head, qh, _pack_nibbles(q & 0xF)], dim=1)


def _q_q6_k(x: torch.Tensor) -> torch.Tensor:
    """float32 [N, 256] -> Q6_K uint8 [N, 210]."""
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
# Reading helpers (``gguf.GGUFReader`` tensors)
# --------------------------------------------------------------------------------------------------------------
def gguf_dtype_name(qtype: str) -> str:
    """GGUF type name -> the dtype name readers report ("F16" -> "float16"; quantised types keep their name)."""
    if qtype in GGUF_PLAIN_TYPES:
        return dtype_name(GGUF_PLAIN_TYPES[qtype])
    return "bfloat16" if qtype == "BF16" else qtype


def gguf_logical_shape(reader, tensor) -> tuple:
    """Shape of a ``GGUFReader`` tensor in torch order: the ``comfy.gguf.orig_shape`` field when the file has one
    (tensors over 4 dims are stored flattened), else the reversed GGUF dims."""
    field = reader.get_field(GGUF_ORIG_SHAPE_FIELD.format(name=tensor.name))
    orig = tuple(int(field.parts[i][0]) for i in field.data) if field is not None else ()
    return orig or tuple(int(d) for d in reversed(tensor.shape.tolist()))


def gguf_tensor(tensor, shape: tuple, qtype: str) -> torch.Tensor:
    """``GGUFReader`` tensor -> dense torch tensor of ``shape`` (plain and BF16 types, copied out of the read-only
    memory map because LoRA merges write in place) or ``GGUFTensor`` (quantised types, bytes left in the map)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        data = torch.from_numpy(tensor.data)
    if qtype in GGUF_PLAIN_TYPES:
        return data.reshape(shape).clone()
    if qtype == "BF16":
        return data.reshape(-1).view(torch.int16).view(torch.bfloat16).reshape(shape).clone()
    return GGUFTensor(data, qtype, shape)
