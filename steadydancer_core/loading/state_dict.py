"""Filling a model built on the meta device from any name -> tensor mapping, strictly.

``empty_init()`` builds modules without memory; ``check_state_dict`` compares names and shapes without reading data;
``load_state_dict_into`` fills the module one tensor at a time (fp8 / GGUF weights of ``PackedLinear`` layers stay
packed, other tensors become the compute dtype) and raises one ``StateDictMismatchError`` listing every missing key,
unexpected key and shape mismatch. It only fills tensors: which layers can hold packed weights is decided when the
model is built (``quant_ops.PACKED_OPS``). fp8 side entries (scales, ``comfy_quant`` descriptors) are recognised here.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping

import torch
import torch.nn as nn

from .errors import StateDictMismatchError, WeightFileError
from .gguf_codecs import (
    GGUF_BLOCKS,
    can_dequantize,
    dtype_name,
    is_gguf_quant_type,
    logical_shape,
    storage_type,
)
from .quant_ops import FP8_DTYPES, PackedLinear, dequantize_tensor, is_packed

# suffixes that carry quantisation side information for ``<layer>.weight`` (never module parameters)
WEIGHT_SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
# other side entries of fp8 files, consumed without being used
CONSUMED_SUFFIXES = (".scale_input", ".input_scale", ".comfy_quant")
SCALED_FP8_MARKER = "scaled_fp8"
# dtype names (as ``LazyStateDict.dtype_of`` reports them) of tensors that stay packed: fp8 and GGUF block types
PACKED_STORAGE = frozenset({dtype_name(d) for d in FP8_DTYPES} | set(GGUF_BLOCKS))
QUANT_METADATA_KEY = "_quantization_metadata"    # safetensors header entry: {"layers": {name: {"format": ...}}}


COMFY_QUANT_FP8_FORMATS = {"float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2}


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
    """Logical shape of ``sd[key]``, from metadata when ``sd`` is lazy (no tensor data read)."""
    getter = getattr(sd, "shape_of", None)
    return torch.Size(getter(key)) if getter is not None else logical_shape(sd[key])


def _comfy_quant_format(t: torch.Tensor, key: str) -> str:
    """``<layer>.comfy_quant`` descriptor (uint8 [n] JSON bytes) -> its "format" ("" when absent)."""
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
    _check_computable(sd, module, [k for k in sorted(expected) if k in keys], what)
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


INTEGER_STORAGE = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"})


def _check_computable(sd: Mapping, module: nn.Module, names: list, what: str) -> None:
    """Fail at load time, naming the tensors, when the file stores weights the model cannot compute with: a GGUF
    type with no dequantiser (e.g. Q8_K), or integers where the model holds floats (metadata only)."""
    dtype_of = getattr(sd, "dtype_of", None)
    held = module.state_dict(keep_vars=True)
    unsupported, integers = [], []
    for name in names:
        stored = dtype_of(name) if dtype_of is not None else storage_type(sd[name])
        if is_gguf_quant_type(stored) and not can_dequantize(stored):
            unsupported.append(f"{name} ({stored})")
        elif stored in INTEGER_STORAGE and held[name].is_floating_point():
            integers.append(f"{name} ({stored})")
    if unsupported:
        raise WeightFileError(
            f"the {what} file stores {len(unsupported)} tensor(s) in GGUF types this loader cannot compute with: "
            f"{_listing(unsupported, 5)}. Use a file quantised as Q8_0, Q6_K, Q5_K_M or Q4_K_M (or fp8 / fp16).")
    if integers:
        raise WeightFileError(
            f"the {what} file stores {len(integers)} weight(s) as integers where the model needs floats: "
            f"{_listing(integers, 5)}. This is not a weight file the model can use (an integer-quantised export?); "
            "use the fp16 / bf16, fp8 or GGUF release.")


def _listing(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")


def _set_tensor(owner: nn.Module, leaf: str, value: torch.Tensor) -> None:
    """Replace parameter/buffer ``leaf`` of ``owner`` by ``value`` (parameters frozen)."""
    if leaf in owner._parameters:
        owner._parameters[leaf] = nn.Parameter(value, requires_grad=False)
    else:
        owner._buffers[leaf] = value


def _cast(t: torch.Tensor, compute_dtype: torch.dtype, scale: torch.Tensor | None) -> torch.Tensor:
    """Stored tensor -> what the module holds: packed/scaled ones dequantised, floats cast, integers kept."""
    if is_packed(t) or scale is not None:
        return dequantize_tensor(t, compute_dtype, scale)
    return t.to(compute_dtype) if t.is_floating_point() else t


def has_packed_linear_weight(sd: Mapping) -> bool:
    """True when some 2-D ``*.weight`` of ``sd`` is stored fp8 or GGUF (metadata only, no tensor data read)."""
    dtype_of = getattr(sd, "dtype_of", None)
    for key in sd.keys():
        if not key.endswith(".weight") or len(_shape_of(sd, key)) != 2:
            continue
        packed = dtype_of(key) in PACKED_STORAGE if dtype_of is not None else is_packed(sd[key])
        if packed:
            return True
    return False


def load_state_dict_into(module: nn.Module, sd: Mapping, compute_dtype: torch.dtype = torch.bfloat16,
                         strict: bool = True, what: str = "model") -> nn.Module:
    """Fill ``module`` from ``sd`` (name -> tensor; may be a lazy mapping that reads tensors on access).

    Floating tensors become ``compute_dtype``; the fp8 or GGUF weight of a ``PackedLinear`` stays packed (its fp8
    scale goes with it); other fp8/GGUF tensors are dequantised. No module is added, removed or replaced.
    Tensors are read one at a time, so peak memory is the model plus one tensor. Returns ``module``.
    Raises ``StateDictMismatchError`` listing missing / unexpected keys and shape mismatches.
    """
    check_state_dict(module, sd, strict=strict, what=what)
    scales, _ = split_quant_entries(sd)
    keys = set(sd.keys())
    modules = dict(module.named_modules())
    for name in list(module.state_dict(keep_vars=True).keys()):
        if name not in keys:
            continue
        owner_name, _, leaf = name.rpartition(".")
        owner = modules[owner_name]
        scale = sd[scales[name]] if name in scales else None
        tensor = sd[name]
        if isinstance(owner, PackedLinear) and leaf == "weight" and is_packed(tensor):
            owner.load_packed_weight(tensor, scale)
        else:
            _set_tensor(owner, leaf, _cast(tensor, compute_dtype, scale))
    leftover = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if leftover:
        raise StateDictMismatchError(
            f"{len(leftover)} tensor(s) of the {what} were never filled: {_listing(leftover)}. "
            "Build the model inside empty_init() so computed buffers are kept, and load a complete file.",
            missing=leftover)
    return module
