"""Which component a weight file holds, answered once for every loader (key names only, no tensor data read).

``identify_component(path_or_state_dict)`` returns one of ``COMPONENTS``' names or None; ``expect_component`` is
what each loader calls: it raises one ``WeightFileError`` naming what the file is, where to choose it and which
file was expected instead.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..models.dit_config import STEADYDANCER_KEYS, missing_steadydancer_modules
from .errors import WeightFileError
from .key_names import DIT_PREFIXES, WAN_MARKER_KEY
from .weight_files import open_state_dict


@dataclass(frozen=True)
class Component:
    """What a file is called in messages, where it is chosen (node input / CLI option) and a typical file name."""

    what: str
    where: str
    example: str


COMPONENTS = {
    "dit": Component("the SteadyDancer diffusion model (DiT)", "dit_name (--dit)",
                     "Wan21_SteadyDancer_fp16.safetensors, its fp8 / GGUF variants or the official SteadyDancer-14B "
                     "folder"),
    "wan_i2v_plain": Component("a plain Wan 2.1 I2V diffusion model (DiT) without the SteadyDancer modules", "",
                               "a SteadyDancer checkpoint"),
    "vae": Component("the Wan 2.1 VAE", "vae_name (--vae)", "wan_2.1_vae.safetensors or Wan2.1_VAE.pth"),
    "text_encoder": Component("the umT5 text encoder", "t5_name (--t5)",
                              "umt5_xxl_fp16.safetensors, umt5_xxl_fp8_e4m3fn_scaled.safetensors or "
                              "models_t5_umt5-xxl-enc-bf16.pth"),
    "image_encoder": Component("the CLIP vision encoder", "clip_vision_name (--clip-vision)",
                               "clip_vision_h.safetensors or models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"),
}

# key markers, checked in this order on the keys with DiT prefixes removed
_VAE_MARKERS = ("encoder.conv1.weight", "decoder.conv1.weight")
_T5_MARKERS = ("encoder.block.0.layer.0.SelfAttention.q.weight", "enc.blk.0.attn_q.weight", "shared.weight")
_T5_OFFICIAL = ("token_embedding.weight", "blocks.0.attn.q.weight")
_CLIP_PREFIXES = ("vision_model.", "visual.")


def _keys(source) -> set[str]:
    if isinstance(source, Mapping):
        return set(source.keys())
    if isinstance(source, (str, Path)):
        return set(open_state_dict(Path(source).expanduser()).keys())
    return set(source)


def identify_component(source) -> str | None:
    """"dit", "wan_i2v_plain", "vae", "text_encoder", "image_encoder" or None for a file path, a folder or any
    name -> tensor mapping (official, ComfyUI, HF or llama.cpp key names)."""
    raw = _keys(source)
    keys = {next((k[len(p):] for p in DIT_PREFIXES if k.startswith(p)), k) for k in raw}
    if WAN_MARKER_KEY in keys:
        missing = missing_steadydancer_modules(keys)
        return "wan_i2v_plain" if len(missing) == len(STEADYDANCER_KEYS) else "dit"
    if any(m in keys for m in _VAE_MARKERS):
        return "vae"
    if any(m in keys for m in _T5_MARKERS) or all(m in keys for m in _T5_OFFICIAL):
        return "text_encoder"
    if any(k.startswith(_CLIP_PREFIXES) for k in raw):
        return "image_encoder"
    return None


def wrong_component_message(path, found: str | None, expected: str, keys=()) -> str:
    """One sentence: what the file is, where to choose it, and which file ``expected`` names instead."""
    want = COMPONENTS[expected]
    if found == "wan_i2v_plain" and expected == "dit":
        return (f"{path} is a plain Wan 2.1 checkpoint: the SteadyDancer modules {list(STEADYDANCER_KEYS)} are "
                f"missing. A SteadyDancer checkpoint is needed ({want.example}).")
    if found is None:
        what = f"not a file SteadyDancer uses ({len(keys)} tensors, e.g. {sorted(keys)[:4]})"
    else:
        got = COMPONENTS[found]
        what = got.what + (f"; choose it under {got.where}" if got.where else ", which SteadyDancer cannot use")
    return f"{path}: this is {what}; expected {want.what} here ({want.example}, chosen under {want.where})."


def expect_component(source, expected: str, path=None, error: type[WeightFileError] = WeightFileError) -> None:
    """Raise one ``error`` (a ``WeightFileError``) unless ``source`` (path or state dict) holds ``expected``."""
    keys = _keys(source)
    found = identify_component(keys)
    if found != expected:
        raise error(wrong_component_message(path if path is not None else source, found, expected, keys))
