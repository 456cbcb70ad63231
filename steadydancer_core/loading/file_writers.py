"""Writers of tiny weight files in the formats users have (for tests, benchmarks and the tiny kit).

``save_gguf`` lays a state dict out as city96's GGUF converter does (quantised linears, BF16 for the parameters the
DiT declares high precision (``SteadyDancerDiT.HIGH_PRECISION``: the modulation), F16/F32 rest, flattened >4-D
tensors with a ``comfy.gguf.orig_shape`` field); ``to_fp8`` turns linear weights into ComfyUI (scaled) fp8. The
readers in ``weight_files.py`` read both back; nothing here runs when a model is loaded.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ..models.dit import SteadyDancerDiT
from .gguf_codecs import GGUF_BLOCKS, GGUF_ORIG_SHAPE_FIELD, quantize_gguf
from .state_dict import SCALED_FP8_MARKER, WEIGHT_SCALE_SUFFIXES

__all__ = ["is_quantizable_linear_weight", "save_gguf", "to_fp8"]


def is_quantizable_linear_weight(name: str, shape, block: int = 1) -> bool:
    """2-D ``*.weight`` tensors (linear layers) whose rows split into whole quantisation blocks."""
    return name.endswith(".weight") and len(shape) == 2 and shape[-1] % block == 0


def save_gguf(path, sd: Mapping[str, torch.Tensor], qtype: str, arch: str = "wan",
              keep_bf16: tuple = SteadyDancerDiT.HIGH_PRECISION) -> None:
    """Write ``sd`` as GGUF the way city96's converter lays files out.

    Linear weights whose rows fit ``qtype`` blocks are quantised; names containing a ``keep_bf16`` part are BF16;
    other tensors with more than one dimension are F16, 1-D ones F32. Tensors with more than 4 dims are stored
    flattened with a ``comfy.gguf.orig_shape.<name>`` entry.
    """
    import gguf

    block = GGUF_BLOCKS[qtype][0] if qtype in GGUF_BLOCKS else 1
    writer = gguf.GGUFWriter(str(path), arch)
    for name, t in sd.items():
        t = t.detach().float().cpu()
        shape = tuple(t.shape)
        if qtype in GGUF_BLOCKS and is_quantizable_linear_weight(name, shape, block):
            writer.add_tensor(name, quantize_gguf(t, qtype), raw_dtype=gguf.GGMLQuantizationType[qtype])
            continue
        if len(shape) > 4:
            writer.add_array(GGUF_ORIG_SHAPE_FIELD.format(name=name), list(shape))
            t = t.reshape(-1, shape[-1])
        if any(part in name for part in keep_bf16):
            raw = gguf.quants.quantize(t.numpy(), gguf.GGMLQuantizationType.BF16)
            writer.add_tensor(name, raw, raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            writer.add_tensor(name, t.numpy().astype(np.float32 if t.dim() <= 1 else np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def to_fp8(sd: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float8_e4m3fn, scaled: bool = True,
           names=None) -> dict[str, torch.Tensor]:
    """Linear weights (``names``, default: every 2-D ``*.weight``) -> fp8 [out, in], ComfyUI "scaled fp8" layout
    when ``scaled`` (``<layer>.scale_weight`` fp32 scalar [] with real weight = fp8 * scale, plus an empty
    ``scaled_fp8`` marker). Other tensors are passed through unchanged."""
    out = {}
    names = set(names) if names is not None else {k for k, v in sd.items() if is_quantizable_linear_weight(k, v.shape)}
    for key, t in sd.items():
        if key not in names:
            out[key] = t
            continue
        if scaled:
            scale = (t.float().abs().max() / torch.finfo(dtype).max).clamp(min=1e-12)
            out[key] = (t.float() / scale).to(dtype)
            out[key[: -len(".weight")] + WEIGHT_SCALE_SUFFIXES[0]] = scale.reshape(())
        else:
            out[key] = t.to(dtype)
    if scaled:
        out[SCALED_FP8_MARKER] = torch.empty(0, dtype=dtype)
    return out
