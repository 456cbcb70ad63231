"""Key names: every rename table and the converters to official names. All key renaming of the project is here.

Files are read by ``weight_files.py``; ``loaders.py`` turns them into models.

Converters map ComfyUI / HF names to the official (upstream checkpoint) names: ``dit_to_official``,
``t5_to_official``, ``clip_to_official``. Official-named input passes through unchanged. Quantisation side entries
keep their suffixes (``QUANT_SIDE_SUFFIXES``: the KJ and ComfyUI names of scales and markers, by role); ComfyUI's
``_quantization_metadata`` header is turned into per-layer ``comfy_quant`` entries before renaming
(``with_header_quant_markers``), so both forms are renamed the same way.
Block codecs live in ``gguf_codecs.py`` / ``nvfp4_codec.py``, packed layers in ``quant_ops.py``, the module filler in
``state_dict.py``, and the writers of test files in ``file_writers.py``.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping

import torch

from .errors import StateDictMismatchError, WeightFileError
from .header_checks import bounded_json
from .gguf_codecs import GGUFTensor
from .quant_ops import dequantize_tensor, is_fp8
from .weight_files import Entry, LazyStateDict, open_state_dict, read_state_dict

__all__ = [
    "WeightFileError", "StateDictMismatchError", "LazyStateDict", "open_state_dict", "read_state_dict",
    "strip_prefixes", "dit_to_official", "lora_target", "t5_to_official", "clip_to_official",
]

# ==============================================================================================================
# Tables (data only)
# ==============================================================================================================
# DiT: prefixes that ComfyUI / other tools put in front of the official names (longest first)
DIT_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.")
WAN_MARKER_KEY = "blocks.0.self_attn.q.weight"         # every Wan 2.1 DiT has it (official names)
# a single safetensors file may state what shapes cannot tell (num_heads, text_len, eps) as JSON in its metadata
DIT_CONFIG_METADATA_KEY = "steadydancer_config"

# Quantisation side entries of ``<layer>.weight`` (KJ "scaled fp8" and ComfyUI's own quantised formats): key suffix ->
# role. The first matching suffix wins. The converters keep these suffixes while renaming the layer part.
QUANT_SIDE_SUFFIXES = (
    (".weight_scale_2", "scale_2"),       # nvfp4: global fp32 scale
    (".weight_scale", "scale"),           # ComfyUI: fp8 per-tensor scale, or nvfp4 blocked e4m3 block scales
    (".scale_weight", "scale"),           # KJ / older ComfyUI scaled fp8: the same as weight_scale for fp8
    (".input_scale", "input_scale"),      # calibrated per-tensor scale of the layer's input (fp8 matmul)
    (".scale_input", "input_scale"),      # older name of input_scale (1.0 there means "none")
    (".comfy_quant", "marker"),           # uint8 bytes of JSON {"format": ...}: ComfyUI's per-layer marker
)
QUANT_MARKER_SUFFIX = ".comfy_quant"
SCALED_FP8_MARKER = "scaled_fp8"          # whole-file marker of scaled fp8; 2 elements: full-precision matmul
# safetensors header entry of ComfyUI's quantised files: JSON {"format_version": "1.0", "layers": {layer: conf}},
# conf = {"format": ...} (or the bare format name); layer names as the file's keys without ".weight"
QUANT_METADATA_KEY = "_quantization_metadata"
MAX_MARKER_BYTES = 4096                   # a comfy_quant marker is a few dozen bytes of JSON

# Name tables are (file-layout prefix, official prefix) pairs; the key's last part (weight, scale_weight...) is
# kept. Placeholders: {i} a block index, {qkvo} a projection letter. ``prefix_rules`` turns a table into
# regex rules for either direction, so each mapping is written once.
NAME_PLACEHOLDERS = {"i": r"\d+", "qkvo": "[qkvo]"}


def prefix_rules(names, inverse: bool = False, whole: bool = False) -> tuple:
    """(regex, replacement) rules from a name table of (file prefix, official prefix) pairs; ``inverse`` maps
    official names to the file layout; ``whole``: the pairs are whole names, not prefixes. Placeholders
    (``NAME_PLACEHOLDERS``) become regex groups carried across."""
    rules = []
    for source, target in names:
        if inverse:
            source, target = target, source
        parts = re.split(r"\{(\w+)\}", source)
        order = parts[1::2]
        pattern = "^" + "".join(re.escape(p) if k % 2 == 0 else f"({NAME_PLACEHOLDERS[p]})" for k, p in enumerate(parts))
        pattern += "$" if whole else ""
        replacement = re.sub(r"\{(\w+)\}", lambda m: f"\\{order.index(m.group(1)) + 1}", target)
        rules.append((pattern, replacement))
    return tuple(rules)


# umT5: ComfyUI / HF T5EncoderModel names
T5_NAMES = (
    ("shared.", "token_embedding."),
    ("encoder.block.{i}.layer.0.layer_norm.", "blocks.{i}.norm1."),
    ("encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias.", "blocks.{i}.pos_embedding.embedding."),
    ("encoder.block.{i}.layer.0.SelfAttention.{qkvo}.", "blocks.{i}.attn.{qkvo}."),
    ("encoder.block.{i}.layer.1.layer_norm.", "blocks.{i}.norm2."),
    ("encoder.block.{i}.layer.1.DenseReluDense.wi_0.", "blocks.{i}.ffn.gate.0."),
    ("encoder.block.{i}.layer.1.DenseReluDense.wi_1.", "blocks.{i}.ffn.fc1."),
    ("encoder.block.{i}.layer.1.DenseReluDense.wo.", "blocks.{i}.ffn.fc2."),
    ("encoder.final_layer_norm.", "norm."),
)
# umT5: llama.cpp names used by GGUF files (city96's conversions); read only
T5_GGUF_NAMES = (
    ("token_embd.", "token_embedding."),
    ("enc.blk.{i}.attn_norm.", "blocks.{i}.norm1."),
    ("enc.blk.{i}.attn_rel_b.", "blocks.{i}.pos_embedding.embedding."),
    ("enc.blk.{i}.attn_{qkvo}.", "blocks.{i}.attn.{qkvo}."),
    ("enc.blk.{i}.ffn_norm.", "blocks.{i}.norm2."),
    ("enc.blk.{i}.ffn_gate.", "blocks.{i}.ffn.gate.0."),
    ("enc.blk.{i}.ffn_up.", "blocks.{i}.ffn.fc1."),
    ("enc.blk.{i}.ffn_down.", "blocks.{i}.ffn.fc2."),
    ("enc.output_norm.", "norm."),
)
T5_RENAMES = prefix_rules(T5_NAMES + T5_GGUF_NAMES)
T5_TO_COMFY = prefix_rules(T5_NAMES, inverse=True)      # writing files in ComfyUI's layout (tiny kit, tests)
T5_TIED_EMBEDDING = ("encoder.embed_tokens.weight", "shared.weight")   # (tied copy, the one kept)

# CLIP vision: HF CLIPVisionModel(WithProjection) names -> official open-clip ``visual.*``
CLIP_NAMES = (
    ("vision_model.embeddings.patch_embedding.", "visual.patch_embedding."),
    ("vision_model.pre_layrnorm.", "visual.pre_norm."),
    ("vision_model.encoder.layers.{i}.layer_norm1.", "visual.transformer.{i}.norm1."),
    ("vision_model.encoder.layers.{i}.layer_norm2.", "visual.transformer.{i}.norm2."),
    ("vision_model.encoder.layers.{i}.self_attn.out_proj.", "visual.transformer.{i}.attn.proj."),
    ("vision_model.encoder.layers.{i}.mlp.fc1.", "visual.transformer.{i}.mlp.0."),
    ("vision_model.encoder.layers.{i}.mlp.fc2.", "visual.transformer.{i}.mlp.2."),
    ("vision_model.post_layernorm.", "visual.post_norm."),
)
CLIP_RENAMES = prefix_rules(CLIP_NAMES)
CLIP_TO_HF = prefix_rules(CLIP_NAMES, inverse=True)     # q/k/v are split from to_qkv separately
CLIP_QKV = (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$",
            "visual.transformer.{i}.attn.to_qkv.{p}")
# side entries of fp8 q/k/v projections: consumed when the three are concatenated
CLIP_QKV_SIDE = (r"^vision_model\.encoder\.layers\.\d+\.self_attn\.[qkv]_proj"
                 r"\.(scale_weight|weight_scale|weight_scale_2|scale_input|input_scale|comfy_quant)$")
CLIP_RESHAPES = (  # (HF key, official key, official shape prefix added in front)
    ("vision_model.embeddings.class_embedding", "visual.cls_embedding", (1, 1)),
    ("vision_model.embeddings.position_embedding.weight", "visual.pos_embedding", (1,)),
)
CLIP_TRANSPOSED = (("visual_projection.weight", "visual.head"),)
CLIP_DROP = (r"^vision_model\.embeddings\.position_ids$", r"^textual\.", r"^log_scale$", r"^text_projection\.")
# official entries Wan never uses (it takes the second-to-last block's output): dropped unless asked for
CLIP_UNUSED = (r"^visual\.post_norm\.", r"^visual\.head$")
CLIP_QKV_OFFICIAL = r"^visual\.transformer\.(\d+)\.attn\.to_qkv\.(weight|bias)$"

# LoRA files: key suffix -> role (down/up: low-rank factors, alpha: scale numerator, diff/diff_b: dense deltas)
LORA_SUFFIXES = (
    (".lora_A.default.weight", "down"), (".lora_B.default.weight", "up"),
    (".lora_A.weight", "down"), (".lora_B.weight", "up"),
    (".lora_down.weight", "down"), (".lora_up.weight", "up"),
    (".alpha", "alpha"), (".diff_b", "diff_b"), (".diff_m", "diff_m"), (".diff", "diff"),
)
# roles that update a bare parameter of the module: role -> (parameter leaf name, role applied to it)
LORA_PARAMETER_ROLES = {"diff_m": (".modulation", "diff")}
# module-path prefixes put in front of official names by trainers / converters (first match removed)
LORA_PREFIXES = ("base_model.model.diffusion_model.", "model.diffusion_model.", "diffusion_model.",
                 "base_model.model.", "transformer.", "model.")
# kohya style: "lora_unet_" + module path with "." replaced by "_"; resolved against the model's module names
KOHYA_PREFIX = "lora_unet_"
# diffusers WanTransformer3DModel module paths -> official (whole paths, applied after the prefix is removed)
DIFFUSERS_WAN_NAMES = (
    ("blocks.{i}.attn1.to_q", "blocks.{i}.self_attn.q"),
    ("blocks.{i}.attn1.to_k", "blocks.{i}.self_attn.k"),
    ("blocks.{i}.attn1.to_v", "blocks.{i}.self_attn.v"),
    ("blocks.{i}.attn1.to_out.0", "blocks.{i}.self_attn.o"),
    ("blocks.{i}.attn2.to_q", "blocks.{i}.cross_attn.q"),
    ("blocks.{i}.attn2.to_k", "blocks.{i}.cross_attn.k"),
    ("blocks.{i}.attn2.to_v", "blocks.{i}.cross_attn.v"),
    ("blocks.{i}.attn2.to_out.0", "blocks.{i}.cross_attn.o"),
    ("blocks.{i}.attn2.add_k_proj", "blocks.{i}.cross_attn.k_img"),
    ("blocks.{i}.attn2.add_v_proj", "blocks.{i}.cross_attn.v_img"),
    ("blocks.{i}.ffn.net.0.proj", "blocks.{i}.ffn.0"),
    ("blocks.{i}.ffn.net.2", "blocks.{i}.ffn.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("condition_embedder.image_embedder.ff.net.0.proj", "img_emb.proj.1"),
    ("condition_embedder.image_embedder.ff.net.2", "img_emb.proj.3"),
    ("proj_out", "head.head"),
)
DIFFUSERS_WAN_RENAMES = prefix_rules(DIFFUSERS_WAN_NAMES, whole=True)

# ==============================================================================================================
# Converters
# ==============================================================================================================
def _as_lazy(sd: Mapping) -> LazyStateDict:
    """Any name -> tensor mapping as a ``LazyStateDict`` (converters work on entries)."""
    return sd if isinstance(sd, LazyStateDict) else LazyStateDict.from_tensors(sd)


def _same_kind(original: Mapping, converted: LazyStateDict):
    """Return ``converted`` lazy when ``original`` was lazy, else as a plain dict."""
    return converted if isinstance(original, LazyStateDict) else {k: converted[k] for k in converted.keys()}


def rename_key(key: str, table, strict: bool = False) -> str:
    """Apply the first (regex, replacement) row of ``table`` that matches ``key``; unmatched keys are kept, or
    raise KeyError when ``strict``."""
    for pattern, repl in table:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    if strict:
        raise KeyError(f"no name mapping for '{key}'")
    return key


def quant_side_entry(key: str) -> tuple[str, str] | None:
    """``<layer>.weight_scale`` -> (``<layer>.weight``, "scale") by ``QUANT_SIDE_SUFFIXES``; None for other keys."""
    for suffix, role in QUANT_SIDE_SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)] + ".weight", role
    return None


def marker_tensor(conf) -> torch.Tensor:
    """A ``<layer>.comfy_quant`` entry as ComfyUI writes it: the UTF-8 bytes of ``json.dumps(conf)`` as uint8 [n]."""
    return torch.tensor(list(json.dumps(conf).encode("utf-8")), dtype=torch.uint8)


def header_quant_layers(metadata: Mapping | None, source: str = "") -> dict:
    """The ``_quantization_metadata`` header entry -> {layer name: conf} ({} when absent)."""
    raw = (metadata or {}).get(QUANT_METADATA_KEY)
    if not raw:
        return {}
    fix = 'it must be JSON like {"layers": {"blocks.0.ffn.0": {"format": "float8_e4m3fn"}}}'
    data = bounded_json(raw, f"{source}: '{QUANT_METADATA_KEY}' in the file header", fix) \
        if isinstance(raw, (str, bytes)) else raw
    layers = data.get("layers", {}) if isinstance(data, dict) else None
    if not isinstance(layers, dict):
        raise WeightFileError(f"{source}: unreadable '{QUANT_METADATA_KEY}' in the file header ('layers' is not a "
                              f"JSON object); {fix}")
    return layers


def with_header_quant_markers(sd: Mapping):
    """The header form of ComfyUI's quantised files turned into the per-layer form: every layer listed in the
    ``_quantization_metadata`` header gets a ``<layer>.comfy_quant`` entry (as ComfyUI does when it loads such a
    file), named like the file's own keys so the rename tables then apply to it. The header entry is dropped from
    the metadata of the result. A layer the header lists without a ``<layer>.weight``, or whose own marker says
    another format, is an error. Mappings without the header come back unchanged."""
    metadata = getattr(sd, "metadata", None)
    if not isinstance(sd, LazyStateDict) or QUANT_METADATA_KEY not in (metadata or {}):
        return sd
    layers = header_quant_layers(metadata, sd.source)
    lazy = sd
    entries = {k: lazy.entry(k) for k in lazy.keys()}
    for layer, conf in layers.items():
        if f"{layer}.weight" not in entries:
            raise WeightFileError(f"{lazy.source}: the '{QUANT_METADATA_KEY}' header lists layer '{layer}', but the "
                                  f"file has no '{layer}.weight'; the header does not belong to these tensors.")
        key, marker = layer + QUANT_MARKER_SUFFIX, marker_tensor(conf)
        if key in entries:
            own, stated = parse_marker(lazy[key], key), parse_marker(marker, f"{QUANT_METADATA_KEY}[{layer!r}]")
            if own.get("format") != stated.get("format"):
                raise WeightFileError(f"{lazy.source}: '{key}' says {own.get('format')!r} but the "
                                      f"'{QUANT_METADATA_KEY}' header says {stated.get('format')!r} for that layer.")
            continue
        entries[key] = Entry((marker.numel(),), "uint8", (lambda m=marker: m))
    return LazyStateDict(entries, lazy.source, {k: v for k, v in metadata.items() if k != QUANT_METADATA_KEY})


def parse_marker(t: torch.Tensor, key: str) -> dict:
    """A ``<layer>.comfy_quant`` entry (uint8 JSON bytes) -> its settings, e.g. {"format": "nvfp4"}; a bare JSON
    string is taken as the format name."""
    if t.numel() > MAX_MARKER_BYTES:
        raise WeightFileError(f"quantisation marker '{key}' holds {t.numel()} bytes (at most {MAX_MARKER_BYTES}); "
                              'it must hold JSON such as {"format": "float8_e4m3fn"}: the file is damaged')
    conf = bounded_json(bytes(t.to(torch.uint8).reshape(-1).numpy()), f"quantisation marker '{key}'",
                        'it must hold JSON such as {"format": "float8_e4m3fn"}')
    if isinstance(conf, str):
        conf = {"format": conf}
    if not isinstance(conf, dict):
        raise WeightFileError(f"quantisation marker '{key}' holds {conf!r}; it must be a JSON object such as "
                              '{"format": "float8_e4m3fn"}')
    return conf


def strip_prefixes(sd: Mapping, prefixes=DIT_PREFIXES):
    """Remove the first matching prefix from every key (``model.diffusion_model.`` etc.); a quantisation header
    becomes per-layer markers first (``with_header_quant_markers``)."""
    lazy = with_header_quant_markers(_as_lazy(sd))
    entries = {}
    for key in lazy.keys():
        new = next((key[len(p):] for p in prefixes if key.startswith(p)), key)
        if new in entries:
            raise WeightFileError(f"{lazy.source}: key '{key}' collides with another key after removing prefixes.")
        entries[new] = lazy.entry(key)
    return _same_kind(sd, lazy.with_entries(entries))


def dit_to_official(sd: Mapping):
    """ComfyUI single-file DiT -> official names (prefixes removed; fp8 side entries keep their names)."""
    return strip_prefixes(sd, DIT_PREFIXES)


def t5_to_official(sd: Mapping):
    """ComfyUI/HF (or llama.cpp GGUF) umT5 encoder names -> official ``T5Encoder`` names (suffixes such as
    ``scale_weight`` kept).

    The tied ``encoder.embed_tokens.weight`` is dropped when ``shared.weight`` exists; other keys (``spiece_model``,
    ``scaled_fp8``) pass through unchanged. A quantisation header becomes per-layer markers first.
    """
    lazy = with_header_quant_markers(_as_lazy(sd))
    tied, kept = T5_TIED_EMBEDDING
    entries = {}
    for key in lazy.keys():
        if key == tied and kept in lazy:
            continue
        source_key = kept if key == tied else key
        entries[rename_key(source_key, T5_RENAMES)] = lazy.entry(key)
    return _same_kind(sd, lazy.with_entries(entries))


def clip_to_official(sd: Mapping, drop_unused: bool = True):
    """HF/ComfyUI CLIP vision names -> official open-clip ``visual.*`` names.

    q/k/v projections are concatenated into ``to_qkv`` ([3D, D] / [3D]); ``class_embedding`` [D] becomes
    ``cls_embedding`` [1, 1, D]; ``position_embedding`` [N, D] becomes ``pos_embedding`` [1, N, D];
    ``visual_projection`` [E, D] becomes ``head`` [D, E]. ``textual.*``/``log_scale`` are dropped, and with
    ``drop_unused`` also ``post_norm``/``head`` (Wan uses the second-to-last block's output). fp8 CLIP weights are
    dequantised to fp32 here.
    """
    lazy = with_header_quant_markers(_as_lazy(sd))
    entries: dict[str, Entry] = {}
    qkv: dict[tuple[str, str], dict[str, str]] = {}
    reshapes = {hf: (off, pre) for hf, off, pre in CLIP_RESHAPES}
    transposed = dict(CLIP_TRANSPOSED)
    for key in lazy.keys():
        if any(re.search(p, key) for p in CLIP_DROP):
            continue
        m = re.match(CLIP_QKV[0], key)
        if m:
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = key
        elif key in reshapes:
            off, pre = reshapes[key]
            e = lazy.entry(key)
            entries[off] = Entry(pre + tuple(e.shape), e.dtype, (lambda e=e, pre=pre: e.load().reshape(*pre, *e.shape)))
        elif key in transposed:
            e = lazy.entry(key)
            entries[transposed[key]] = Entry(tuple(reversed(e.shape)), e.dtype, (lambda e=e: e.load().t().contiguous()))
        elif not re.match(CLIP_QKV_SIDE, key):
            entries[rename_key(key, CLIP_RENAMES)] = lazy.entry(key)
    for (i, part), names in qkv.items():
        if set(names) != {"q", "k", "v"}:
            raise WeightFileError(f"{lazy.source}: layer {i} has only {sorted(names)} of the q/k/v projection {part}s.")
        parts = [lazy.entry(names[c]) for c in "qkv"]
        _refuse_unsplittable(lazy, [names[c] for c in "qkv"])
        scales = [_scale_entry(lazy, names[c]) for c in "qkv"]
        shape = (sum(p.shape[0] for p in parts),) + tuple(parts[0].shape[1:])
        entries[CLIP_QKV[1].format(i=i, p=part)] = Entry(shape, parts[0].dtype, (
            lambda parts=parts, scales=scales: torch.cat([_dense(p.load(), s) for p, s in zip(parts, scales)])))
    if drop_unused:
        entries = {k: e for k, e in entries.items() if not any(re.search(p, k) for p in CLIP_UNUSED)}
    return _same_kind(sd, lazy.with_entries(entries))


def _scale_entry(lazy: LazyStateDict, key: str) -> Entry | None:
    """The fp8 scale entry of ``<layer>.weight`` (``scale_weight`` / ``weight_scale``), or None."""
    base = key[: -len(".weight")] if key.endswith(".weight") else None
    for suffix, role in QUANT_SIDE_SUFFIXES:
        if base and role == "scale" and base + suffix in lazy:
            return lazy.entry(base + suffix)
    return None


def _refuse_unsplittable(lazy: LazyStateDict, keys) -> None:
    """q/k/v weights are concatenated here, which only fp8 / GGUF / dense storage allows."""
    for key in keys:
        marker = key[: -len(".weight")] + QUANT_MARKER_SUFFIX if key.endswith(".weight") else None
        if marker in lazy and parse_marker(lazy[marker], marker).get("format") == "nvfp4":
            raise WeightFileError(f"{lazy.source}: '{key}' is stored as nvfp4, which this loader does not read for "
                                  "the CLIP vision encoder; use clip_vision_h.safetensors (fp16).")


def _dense(t: torch.Tensor, scale: Entry | None) -> torch.Tensor:
    """fp8 (optionally scaled) or GGUF weight [out, in] -> float32 [out, in]; other tensors unchanged."""
    if is_fp8(t) or scale is not None or isinstance(t, GGUFTensor):
        return dequantize_tensor(t, torch.float32, None if scale is None else scale.load())
    return t


def lora_target(key: str, module_names) -> tuple[str | None, str | None]:
    """LoRA key -> (official module name or None when unknown, role or None when the suffix is unknown).

    ``module_names``: the model's module names (a set), used to resolve kohya ``lora_unet_a_b_c`` paths.
    """
    role = next((r for suffix, r in LORA_SUFFIXES if key.endswith(suffix)), None)
    if role is None:
        return None, None
    path = key[: -len(next(suffix for suffix, r in LORA_SUFFIXES if key.endswith(suffix)))]
    if path.startswith(KOHYA_PREFIX):
        flat = path[len(KOHYA_PREFIX):]
        matches = [n for n in module_names if n.replace(".", "_") == flat]
        return (matches[0] if len(matches) == 1 else None), role
    path = next((path[len(p):] for p in LORA_PREFIXES if path.startswith(p)), path)
    path = rename_key(path, DIFFUSERS_WAN_RENAMES)
    if role in LORA_PARAMETER_ROLES:
        leaf, role = LORA_PARAMETER_ROLES[role]
        path += leaf
    return (path if path in module_names else None), role
