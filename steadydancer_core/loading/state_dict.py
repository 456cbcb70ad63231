"""Filling a model built on the meta device from any name -> tensor mapping, strictly.

``empty_init()`` builds modules without memory; ``check_state_dict`` compares names and shapes without reading data;
``load_state_dict_into`` fills the module one tensor at a time (fp8 / nvfp4 / GGUF weights of ``PackedLinear``
layers stay packed, other tensors become the compute dtype) and raises one ``StateDictMismatchError`` listing every
missing key, unexpected key and shape mismatch. It only fills tensors: which layers can hold packed weights is decided
when the model is built (``quant_ops.PACKED_OPS``).

Quantisation side entries (scales, ``comfy_quant`` markers; their names are in ``key_names.QUANT_SIDE_SUFFIXES``)
are gathered per layer by ``quant_layout``: ComfyUI's formats (``COMFY_QUANT_FORMATS``) are checked against the
stored weight, a format's required entries that are absent are missing keys, and entries without their layer's
weight or of no use to its format are unexpected keys.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .errors import StateDictMismatchError, WeightFileError
from .finite import check_finite
from .gguf_codecs import (
    GGUF_BLOCKS,
    can_dequantize,
    dtype_name,
    is_gguf_quant_type,
    logical_shape,
    storage_type,
)
from .key_names import (
    MAX_MARKER_BYTES,
    QUANT_MARKER_SUFFIX,
    QUANT_METADATA_KEY,
    QUANT_SIDE_SUFFIXES,
    SCALED_FP8_MARKER,
    parse_marker,
    quant_side_entry,
    with_header_quant_markers,
)
from .nvfp4_codec import NVFP4_BLOCK, dequantize_nvfp4, storage_shapes, unswizzle_block_scales
from .nvfp4_codec import logical_shape as nvfp4_logical_shape
from .quant_ops import FP8_DTYPES, NVFP4, PackedLinear, dequantize_tensor, is_packed

# dtype names (as ``LazyStateDict.dtype_of`` reports them) of tensors that stay packed: fp8 and GGUF block types
PACKED_STORAGE = frozenset({dtype_name(d) for d in FP8_DTYPES} | set(GGUF_BLOCKS))
# ComfyUI's quantisation formats read here (its ``QUANT_ALGOS`` names) -> storage dtype of ``<layer>.weight``
COMFY_QUANT_FORMATS = {"float8_e4m3fn": "float8_e4m3fn", "float8_e5m2": "float8_e5m2", NVFP4: "uint8"}
# side entries (roles of QUANT_SIDE_SUFFIXES) each format needs, and those it may carry besides
FORMAT_SIDE_ROLES = {"float8_e4m3fn": ({"scale"}, {"input_scale"}), "float8_e5m2": ({"scale"}, {"input_scale"}),
                     NVFP4: ({"scale", "scale_2"}, {"input_scale"})}
# layers without a marker (plain or KJ scaled fp8) may carry these
UNMARKED_SIDE_ROLES = {"scale", "input_scale"}
# KJ files store 1.0 under this name for "no input scale"; ComfyUI drops such entries too
PLACEHOLDER_INPUT_SCALE = (".scale_input", 1.0)
SCALED_FP8_FULL_PRECISION_NUMEL = 2       # a two-element ``scaled_fp8`` marker: the file asks for full-precision mm
ONE_BYTE_DTYPES = ("float8_e4m3fn", "uint8", "int8")


@dataclass(frozen=True)
class LayerQuant:
    """How one stored ``<layer>.weight`` is quantised: its side entries (keys, None when absent) and the format
    its ``comfy_quant`` marker declares (None without a marker: plain or KJ scaled fp8, GGUF, dense)."""

    format: str | None = None
    scale: str | None = None             # weight_scale / scale_weight (nvfp4: the blocked block scales)
    scale_2: str | None = None           # nvfp4 global scale
    input_scale: str | None = None
    full_precision_mm: bool = False


@dataclass
class QuantLayout:
    """``quant_layout``'s findings: weight key -> ``LayerQuant``, the side keys it consumed, and the problems."""

    layers: dict = field(default_factory=dict)
    consumed: set = field(default_factory=set)
    missing: list = field(default_factory=list)      # side entries a format needs that are absent
    unexpected: list = field(default_factory=list)   # side entries without their weight or of no use to the format


def _canonical_suffix(role: str) -> str:
    """The first (ComfyUI) key suffix of a side-entry role, used to name absent entries."""
    return next(suffix for suffix, r in QUANT_SIDE_SUFFIXES if r == role)


def unsupported_format_message(key: str, fmt) -> str:
    return (f"'{key}' declares quantisation format {fmt!r}, which this loader does not read; supported formats: "
            f"{', '.join(COMFY_QUANT_FORMATS)} (or fp16 / bf16, KJ scaled fp8 and GGUF files)")


def quant_layout(sd: Mapping) -> QuantLayout:
    """Gather the quantisation side entries of ``sd`` per layer (key names and tiny markers only; no weight read)."""
    found = QuantLayout()
    full_precision = False
    if SCALED_FP8_MARKER in sd:
        found.consumed.add(SCALED_FP8_MARKER)
        full_precision = _numel(sd, SCALED_FP8_MARKER) == SCALED_FP8_FULL_PRECISION_NUMEL
    sides: dict[str, dict[str, str]] = {}
    for key in sd.keys():
        hit = quant_side_entry(key)
        if hit is None:
            continue
        weight, role = hit
        found.consumed.add(key)
        if weight not in sd:
            found.unexpected.append(key)
        elif role in sides.setdefault(weight, {}):
            found.unexpected.append(key)          # e.g. both scale_weight and weight_scale
        else:
            sides[weight][role] = key
    for weight, roles in sides.items():
        if "marker" in roles and _numel(sd, roles["marker"]) > MAX_MARKER_BYTES:     # checked before it is read
            raise WeightFileError(f"quantisation marker '{roles['marker']}' holds {_numel(sd, roles['marker'])} "
                                  f"bytes (at most {MAX_MARKER_BYTES}); the file is damaged")
        conf = parse_marker(sd[roles["marker"]], roles["marker"]) if "marker" in roles else {}
        fmt = conf.get("format") if "marker" in roles else None
        if "marker" in roles and fmt not in COMFY_QUANT_FORMATS:
            raise WeightFileError(unsupported_format_message(roles["marker"], fmt))
        required, optional = FORMAT_SIDE_ROLES[fmt] if fmt else (set(), UNMARKED_SIDE_ROLES)
        layer = weight[: -len(".weight")]
        found.missing += [layer + _canonical_suffix(r) for r in sorted(required - set(roles))]
        found.unexpected += [k for r, k in roles.items() if r != "marker" and r not in required | optional]
        found.layers[weight] = LayerQuant(fmt, roles.get("scale"), roles.get("scale_2"), roles.get("input_scale"),
                                          full_precision or bool(conf.get("full_precision_matrix_mult", False)))
    return found


def split_quant_entries(sd: Mapping) -> tuple[dict[str, LayerQuant], set[str]]:
    """(weight name -> ``LayerQuant``, keys consumed as side information). Raises ``WeightFileError`` for
    quantisation formats this loader does not read, naming the marker and the supported formats."""
    found = quant_layout(with_header_quant_markers(sd))
    return found.layers, found.consumed


def _numel(sd: Mapping, key: str) -> int:
    getter = getattr(sd, "shape_of", None)
    return torch.Size(getter(key)).numel() if getter is not None else sd[key].numel()


def _stored_dtype(sd: Mapping, key: str) -> str:
    getter = getattr(sd, "dtype_of", None)
    return getter(key) if getter is not None else storage_type(sd[key])


def logical_shapes(sd: Mapping) -> dict[str, tuple]:
    """name -> the shape each tensor stands for, without the quantisation side entries: an nvfp4 weight's packed
    shape [rows, bytes] becomes its padded [rows, 2 * bytes] (the true shape when both are multiples of 16, as in
    every Wan / umT5 linear). What configs are inferred from."""
    layers, side = split_quant_entries(sd)
    out = {}
    for key in sd.keys():
        if key in side:
            continue
        shape = tuple(_shape_of(sd, key))
        quant = layers.get(key)
        out[key] = nvfp4_logical_shape(shape) if quant is not None and quant.format == NVFP4 else shape
    return out


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


def check_state_dict(module: nn.Module, sd: Mapping, strict: bool = True, what: str = "model") -> set[str]:
    """Compare names and shapes (no tensor data is read). Returns the consumed side keys; raises on problems."""
    return _check(module, with_header_quant_markers(sd), strict, what).consumed


def _check(module: nn.Module, sd: Mapping, strict: bool, what: str) -> QuantLayout:
    expected = {k: v.shape for k, v in module.state_dict(keep_vars=True).items()}
    layout = quant_layout(sd)
    keys = set(sd.keys())
    missing = sorted(k for k in expected if k not in keys) + sorted(layout.missing)
    unexpected = sorted(k for k in keys - layout.consumed if k not in expected) + sorted(layout.unexpected)
    nvfp4 = {k for k, q in layout.layers.items() if q.format == NVFP4 and k in expected}
    _check_formats(sd, layout, expected, what)
    mismatched = []
    for k in sorted(expected):
        if k in nvfp4:
            mismatched += _nvfp4_mismatches(sd, k, layout.layers[k], tuple(expected[k]))
        elif k in keys:
            got = _shape_of(sd, k)
            if tuple(got) != tuple(expected[k]):
                mismatched.append(f"{k}: file {tuple(got)} vs model {tuple(expected[k])}")
    _check_computable(sd, module, [k for k in sorted(expected) if k in keys and k not in nvfp4], what)
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
    return layout


def _check_formats(sd: Mapping, layout: QuantLayout, expected: Mapping, what: str) -> None:
    """A marked layer's weight must be stored as its format says, on a 2-D (linear) weight of the model."""
    wrong = []
    for key, quant in sorted(layout.layers.items()):
        if quant.format is None:
            continue
        stored = _stored_dtype(sd, key)
        if stored != COMFY_QUANT_FORMATS[quant.format]:
            wrong.append(f"{key} is stored as {stored} but marked {quant.format}")
        elif key in expected and len(expected[key]) != 2:
            wrong.append(f"{key} is marked {quant.format} but the model's tensor is not a linear weight "
                         f"(shape {tuple(expected[key])})")
        elif quant.format == NVFP4 and quant.scale and _stored_dtype(sd, quant.scale) not in ONE_BYTE_DTYPES:
            wrong.append(f"{quant.scale} is stored as {_stored_dtype(sd, quant.scale)}; nvfp4 block scales are "
                         "float8_e4m3fn")
    if wrong:
        raise WeightFileError(f"the {what} file's quantisation markers do not match its tensors: {_listing(wrong, 5)}."
                              " The file is damaged or was written by a tool with another layout; use the fp16 / "
                              "bf16 release or re-export it.")


def _nvfp4_mismatches(sd: Mapping, key: str, quant: LayerQuant, shape: tuple) -> list[str]:
    """Shape problems of an nvfp4 weight and its block scales against the model's linear weight [out, in]."""
    if len(shape) != 2:
        return []                                 # reported by _check_formats
    packed, blocked = storage_shapes(*shape)
    found = []
    got = tuple(_shape_of(sd, key))
    if got != packed:
        found.append(f"{key}: file {got} vs nvfp4 {packed} for the model's {shape}")
    if quant.scale and tuple(_shape_of(sd, quant.scale)) != blocked:
        found.append(f"{quant.scale}: file {tuple(_shape_of(sd, quant.scale))} vs nvfp4 block scales {blocked} for "
                     f"the model's {shape}")
    if quant.scale_2 and _numel(sd, quant.scale_2) != 1:
        found.append(f"{quant.scale_2}: {tuple(_shape_of(sd, quant.scale_2))} vs one fp32 number")
    return found


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


def _create_on(module: nn.Module, device: torch.device, recurse: bool) -> None:
    for sub in module.modules() if recurse else (module,):
        for leaf, t in list(sub._parameters.items()) + list(sub._buffers.items()):
            if t is not None and not t.is_meta and t.device != device:
                _set_tensor(sub, leaf, t.to(device))


def create_on(module: nn.Module, device: torch.device | str) -> nn.Module:
    """Put every (non-meta) tensor of a module being loaded on ``device``: the loaders' last step when a model is
    loaded straight to its device (buffers computed at construction, LoRA adapters built from the file). Parameters
    stay frozen. Returns ``module``."""
    _create_on(module, torch.device(device), recurse=True)
    return module


def has_packed_linear_weight(sd: Mapping) -> bool:
    """True when some 2-D ``*.weight`` of ``sd`` is stored fp8 or GGUF, or a layer carries a ComfyUI quantisation
    marker (metadata and key names only, no tensor data read)."""
    if QUANT_METADATA_KEY in (getattr(sd, "metadata", None) or {}):
        return True
    dtype_of = getattr(sd, "dtype_of", None)
    for key in sd.keys():
        if key.endswith(QUANT_MARKER_SUFFIX):
            return True
        if not key.endswith(".weight") or len(_shape_of(sd, key)) != 2:
            continue
        packed = dtype_of(key) in PACKED_STORAGE if dtype_of is not None else is_packed(sd[key])
        if packed:
            return True
    return False


def _input_scale(sd: Mapping, key: str | None) -> torch.Tensor | None:
    """The layer's input scale, or None (also for the 1.0 placeholder older files store)."""
    if key is None:
        return None
    value = sd[key]
    suffix, placeholder = PLACEHOLDER_INPUT_SCALE
    if key.endswith(suffix) and value.numel() == 1 and float(value.reshape(())) == placeholder:
        return None
    return value


def load_state_dict_into(module: nn.Module, sd: Mapping, compute_dtype: torch.dtype = torch.bfloat16,
                         strict: bool = True, what: str = "model", device: torch.device | str | None = None
                         ) -> nn.Module:
    """Fill ``module`` from ``sd`` (name -> tensor; may be a lazy mapping that reads tensors on access).

    Floating tensors become ``compute_dtype``; the fp8, nvfp4 or GGUF weight of a ``PackedLinear`` stays packed (its
    scales go with it); other fp8 / nvfp4 / GGUF tensors are dequantised. No module is added, removed or replaced.
    Tensors are read one at a time, so peak memory is the model plus one tensor. device: where the filled tensors
    are created (None: the CPU): each one goes there as soon as it is read, so host memory holds one tensor at a
    time, never the model; buffers computed at construction follow at the end (``create_on``). Returns ``module``.
    Raises ``StateDictMismatchError`` listing missing / unexpected keys and shape mismatches, and
    ``WeightFileError`` for quantisation formats it does not read (naming the tensor and the supported formats).
    """
    sd = with_header_quant_markers(sd)
    layers = _check(module, sd, strict, what).layers
    keys = set(sd.keys())
    label = f"{what} ({sd.source})" if getattr(sd, "source", "") and str(sd.source) not in what else what
    modules = dict(module.named_modules())
    held = module.state_dict(keep_vars=True)
    for name in list(held.keys()):
        if name not in keys:
            continue
        owner_name, _, leaf = name.rpartition(".")
        owner = modules[owner_name]
        quant = layers.get(name, LayerQuant())
        scale = sd[quant.scale] if quant.scale else None
        tensor = sd[name]
        for key, value in ((name, tensor), (quant.scale, scale)):           # NaN / Inf found here, not when sampling
            check_finite(value, key, label)
        if quant.format == NVFP4:
            global_scale = sd[quant.scale_2]
            check_finite(global_scale, quant.scale_2, label)
            if isinstance(owner, PackedLinear) and leaf == "weight":
                owner.load_packed_weight(tensor, global_scale, qtype=NVFP4, block_scale=scale)
            else:
                out_features, in_features = held[name].shape
                plain = unswizzle_block_scales(scale.view(torch.float8_e4m3fn), out_features,
                                               -(-in_features // NVFP4_BLOCK))
                _set_tensor(owner, leaf, dequantize_nvfp4(tensor, plain, global_scale, held[name].shape,
                                                          compute_dtype))
        elif isinstance(owner, PackedLinear) and leaf == "weight" and is_packed(tensor):
            owner.load_packed_weight(tensor, scale, input_scale=_input_scale(sd, quant.input_scale),
                                     full_precision_mm=quant.full_precision_mm)
        else:
            value = _cast(tensor, compute_dtype, scale)
            check_finite(value, name, label, stored=tensor)
            _set_tensor(owner, leaf, value)
        if device is not None:
            _create_on(owner, torch.device(device), recurse=False)
    if device is not None:
        create_on(module, device)
    leftover = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if leftover:
        raise StateDictMismatchError(
            f"{len(leftover)} tensor(s) of the {what} were never filled: {_listing(leftover)}. "
            "Build the model inside empty_init() so computed buffers are kept, and load a complete file.",
            missing=leftover)
    return module
