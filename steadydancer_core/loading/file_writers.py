"""Writers of tiny weight files in the formats users have (for tests, benchmarks and the tiny kit).

``save_gguf`` lays a state dict out as city96's GGUF converter does (quantised linears, BF16 for the parameters the
DiT declares high precision (``SteadyDancerDiT.HIGH_PRECISION``: the modulation), F16/F32 rest, flattened >4-D
tensors with a ``comfy.gguf.orig_shape`` field); ``to_fp8`` turns linear weights into KJ-style (scaled) fp8;
``to_comfy_quant`` into ComfyUI's own quantised formats (fp8 e4m3 / e5m2 with ``weight_scale`` and optional
``input_scale``, nvfp4), marked per layer or in the header. The readers in ``weight_files.py`` read them back;
nothing here runs when a model is loaded.
"""
from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import torch

from ..models.dit import SteadyDancerDiT
from .gguf_codecs import GGUF_BLOCKS, GGUF_ORIG_SHAPE_FIELD, quantize_gguf
from .key_names import QUANT_MARKER_SUFFIX, QUANT_METADATA_KEY, SCALED_FP8_MARKER, marker_tensor
from .nvfp4_codec import quantize_nvfp4

__all__ = ["is_quantizable_linear_weight", "save_gguf", "to_fp8", "to_comfy_quant"]

COMFY_FP8_DTYPES = {"float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2}
QUANT_FORMAT_VERSION = "1.0"


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
            out[key[: -len(".weight")] + ".scale_weight"] = scale.reshape(())
        else:
            out[key] = t.to(dtype)
    if scaled:
        out[SCALED_FP8_MARKER] = torch.empty(0, dtype=dtype)
    return out


def to_comfy_quant(sd: Mapping[str, torch.Tensor], fmt: str, names=None, header: bool = False,
                   input_scales: Mapping[str, float] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Linear weights (``names``, default: every 2-D ``*.weight``) -> ComfyUI's quantised layout ``fmt``
    ("float8_e4m3fn", "float8_e5m2" or "nvfp4"). Returns (tensors, safetensors metadata).

    fp8: ``<layer>.weight`` fp8 [out, in] and ``<layer>.weight_scale`` fp32 scalar (amax / fp8 max; real weight =
    fp8 * scale). nvfp4: ``weight`` uint8 packed, ``weight_scale`` e4m3 block scales (blocked layout),
    ``weight_scale_2`` fp32 scalar (``nvfp4_codec``). ``input_scales``: layer name (without ``.weight``) -> a
    per-tensor input scale written as ``<layer>.input_scale``. The format is stated per layer as
    ``<layer>.comfy_quant`` (uint8 JSON), or with ``header`` in the ``_quantization_metadata`` header entry.
    """
    if fmt not in (*COMFY_FP8_DTYPES, "nvfp4"):
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join((*COMFY_FP8_DTYPES, 'nvfp4'))}")
    names = set(names) if names is not None else {k for k, v in sd.items() if is_quantizable_linear_weight(k, v.shape)}
    out, layers = {}, {}
    for key, t in sd.items():
        if key not in names:
            out[key] = t
            continue
        layer = key[: -len(".weight")]
        if fmt == "nvfp4":
            out[key], out[f"{layer}.weight_scale"], out[f"{layer}.weight_scale_2"] = quantize_nvfp4(t)
        else:
            dtype = COMFY_FP8_DTYPES[fmt]
            top = torch.finfo(dtype).max
            scale = (t.float().abs().max() / top).clamp(min=1e-12)
            out[key] = (t.float() / scale).clamp(-top, top).to(dtype)
            out[f"{layer}.weight_scale"] = scale.reshape(())
        if input_scales and layer in input_scales:
            out[f"{layer}.input_scale"] = torch.tensor(float(input_scales[layer]), dtype=torch.float32)
        layers[layer] = {"format": fmt}
        if not header:
            out[layer + QUANT_MARKER_SUFFIX] = marker_tensor(layers[layer])
    metadata = {QUANT_METADATA_KEY: json.dumps({"format_version": QUANT_FORMAT_VERSION, "layers": layers})} \
        if header else {}
    return out, metadata
