"""``load_dit`` / ``load_vae`` / ``load_text_encoder`` / ``load_image_encoder``: a file (any supported format and key
layout) -> a model on the CPU, with a clear error when the file is another component (``identify.py``) or
incomplete. Models are built with the layer ops the file needs (``quant_ops.PACKED_OPS`` when it holds fp8 / nvfp4 /
GGUF linear weights, else the plain ops) and then only filled. ComfyUI's quantised formats (per-layer
``comfy_quant`` markers or the ``_quantization_metadata`` header) load for the DiT and umT5.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..models.dit_config import DIT_STATED_BOUNDS, DiTConfig
from ..models.image_encoder import VISUAL_PREFIX, CLIPVisionTower, ImageEncoder
from ..models.image_encoder_config import CLIPVisionConfig
from ..models.ops import PLAIN_OPS, Ops
from ..models.text_encoder import TextEncoder, UMT5Encoder
from ..models.text_encoder_config import UMT5_TEXT_LEN, T5Config
from ..models.tokenizer import (
    SPIECE_TENSOR_KEY,
    TokenizerError,
    load_tokenizer,
    spiece_bytes_from_tensor,
)
from ..models.vae import WanVAE
from ..models.vae_config import VAEConfig
from .errors import WeightFileError
from .header_checks import bounded_json
from .identify import expect_component
from .key_names import (
    DIT_CONFIG_METADATA_KEY,
    clip_to_official,
    dit_to_official,
    t5_to_official,
)
from .quant_ops import PACKED_OPS
from .state_dict import (
    create_on,
    empty_init,
    has_packed_linear_weight,
    load_state_dict_into,
    logical_shapes,
)
from .weight_files import OFFICIAL_DIT_CONFIG, LazyStateDict, open_state_dict


MAX_CONFIG_BYTES = 1 << 20       # an official config.json is ~1 KB


def _stated_config(path: Path, sd: LazyStateDict) -> dict:
    """What the files state about the config: the official folder's config.json, or for a single file the JSON
    under ``DIT_CONFIG_METADATA_KEY`` in its safetensors metadata; {} when neither exists. Every value the config
    uses is checked against ``DIT_STATED_BOUNDS``."""
    if path.is_dir():
        cfg = path / OFFICIAL_DIT_CONFIG
        if not cfg.is_file():
            return {}
        where = str(cfg)
        try:
            if cfg.stat().st_size > MAX_CONFIG_BYTES:
                raise WeightFileError(f"{cfg} is larger than a config file may be ({MAX_CONFIG_BYTES} bytes); "
                                      "download the model folder again")
            text = cfg.read_bytes()
        except OSError as exc:
            raise WeightFileError(f"{cfg} cannot be read: {exc}") from exc
    else:
        text, where = sd.metadata.get(DIT_CONFIG_METADATA_KEY), f"{path} (metadata '{DIT_CONFIG_METADATA_KEY}')"
        if text is None:
            return {}
    fix = "fix or remove it (without it the config is inferred from the tensor shapes)"
    stated = bounded_json(text, where, fix, max_bytes=MAX_CONFIG_BYTES)
    if not isinstance(stated, dict):
        raise WeightFileError(f"{where} must be a JSON object such as {{\"num_heads\": 40}}, got "
                              f"{type(stated).__name__}")
    for key, (low, high) in DIT_STATED_BOUNDS.items():
        if key not in stated:
            continue
        value = stated[key]
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and \
            (isinstance(value, int) or key == "eps")
        if not number or not low <= value <= high:                   # NaN fails too
            kind = "a number" if key == "eps" else "an integer"
            raise WeightFileError(f"{where} states {key} = {str(value)[:40]}, not {kind} from {low:g} to {high:g}; "
                                  f"{fix} (the released model's value is {getattr(DiTConfig(), key)})")
    return stated


def ops_for(sd: Mapping) -> Ops:
    """The layer ops a model for ``sd`` is built with: packed ops when any linear weight is fp8 / nvfp4 / GGUF."""
    return PACKED_OPS if has_packed_linear_weight(sd) else PLAIN_OPS


def dit_config_from_state_dict(sd: LazyStateDict, config_json: Mapping | None = None):
    """``DiTConfig`` inferred from tensor shapes (no data read). ``config_json`` (the official folder's
    config.json, or a single file's metadata config) supplies what shapes cannot tell (num_heads, text_len, eps)."""
    shapes = logical_shapes(sd)
    try:
        return DiTConfig.from_shapes(shapes, **DiTConfig.official_config_overrides(dict(config_json or {})))
    except ValueError as exc:
        fix = "; the file is damaged or not a SteadyDancer DiT: use the released weights" \
            if str(exc).startswith("DiTConfig:") else ""
        raise WeightFileError(f"{sd.source}: {exc}{fix}") from exc


def load_dit(path, dtype: torch.dtype = torch.bfloat16, attention: str = "sdpa", loras=(), device=None):
    """Load a SteadyDancer DiT from any supported file; config inferred from shapes; parameters streamed.

    ``loras``: sequence of (path, strength). The LoRA report is kept as ``model.lora_report``.
    fp8, nvfp4 and GGUF linear weights stay packed (``PackedLinear``); everything else is cast to ``dtype``.
    device: where the DiT is created (None: the CPU); each tensor goes there as it is read, so no host copy of the
    DiT is ever held (a rank's replica on its GPU).
    """
    from ..models.dit import SteadyDancerDiT

    path = Path(path).expanduser()
    raw = open_state_dict(path)
    expect_component(raw, "dit", path)
    sd = dit_to_official(raw)
    config = dit_config_from_state_dict(sd, _stated_config(path, sd))
    with empty_init():
        model = SteadyDancerDiT(config, attention_backend=attention, ops=ops_for(sd))
    load_state_dict_into(model, sd, dtype, strict=True, what="SteadyDancer DiT", device=device)
    model.eval().requires_grad_(False)
    if loras:
        from .lora import apply_loras

        model.lora_report = apply_loras(model, list(loras))
        if device is not None:
            create_on(model, device)              # the adapters of packed layers are built on the CPU
    return model


class VAEWeightsError(WeightFileError):
    """The file is not the Wan 2.1 VAE; the message names what was expected and what was found."""


def _check_not_wan22_vae(shapes: dict, path) -> None:
    """The Wan 2.2 VAE has the same key names as Wan 2.1's but 12 input channels (z_dim 48)."""
    conv_in = shapes.get("encoder.conv1.weight")
    if conv_in is not None and len(conv_in) == 5 and conv_in[1] == 12:
        raise VAEWeightsError(f"{path}: expected the Wan 2.1 VAE; found the Wan 2.2 VAE (12 input channels, z_dim 48), "
                              f"which Wan 2.1/SteadyDancer cannot use. Choose wan_2.1_vae.safetensors.")


def load_vae(path, dtype: torch.dtype = torch.float32) -> WanVAE:
    """Load the Wan 2.1 VAE from an official .pth or a ComfyUI .safetensors (any float dtype) onto the CPU in
    ``dtype``, one tensor at a time. The width is read from the weights. Raises VAEWeightsError for a file of
    another component and WeightFileError for unreadable, truncated or incomplete files."""
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"load_vae: dtype must be float32, bfloat16 or float16, got {dtype}")
    sd = open_state_dict(path)
    expect_component(sd, "vae", path, error=VAEWeightsError)
    shapes = sd.shapes()
    _check_not_wan22_vae(shapes, path)
    config = VAEConfig.from_shapes(shapes)
    with torch.device("meta"):
        model = WanVAE(config)
    load_state_dict_into(model, sd, compute_dtype=dtype, strict=True, what=f"Wan 2.1 VAE ({path})")
    return model.eval().requires_grad_(False)


def _check_umt5_position_tables(keys, path) -> None:
    """umT5 has a relative-position table in every block; T5 v1.1 (t5xxl) only in the first."""
    keys = set(keys)
    if "blocks.0.pos_embedding.embedding.weight" not in keys or "blocks.1.attn.q.weight" in keys and \
            "blocks.1.pos_embedding.embedding.weight" not in keys:
        raise WeightFileError(
            f"{path} is a T5 encoder with one shared position table (T5 v1.1, e.g. t5xxl for Flux/SD3), not "
            f"umT5. SteadyDancer needs umT5-XXL: umt5_xxl_fp16.safetensors, umt5_xxl_fp8_e4m3fn_scaled."
            f"safetensors or models_t5_umt5-xxl-enc-bf16.pth."
        )


def load_text_encoder(path, tokenizer=None, dtype: torch.dtype = torch.bfloat16,
                      text_len: int = UMT5_TEXT_LEN) -> TextEncoder:
    """Load umT5 from the official ``.pth`` or a ComfyUI ``.safetensors`` (fp16/bf16/fp32, fp8 or scaled fp8,
    ComfyUI's quantised formats: fp8 e4m3 / e5m2 and nvfp4).

    Args:
        path: weight file (anything ``weight_files.open_state_dict`` opens); tensors are read one at a time.
        tokenizer: sentencepiece ``.model`` file, a folder with ``spiece.model`` / ``tokenizer.json``, raw bytes or
            a uint8 tensor; None uses the ``spiece_model`` tensor ComfyUI embeds in its files.
        dtype: compute dtype; fp8 / nvfp4 weights stay packed in memory and are dequantised per layer.
        text_len: tokens per prompt incl. EOS (512 for Wan).
    Returns:
        TextEncoder on the CPU.
    """
    raw = open_state_dict(path)
    expect_component(raw, "text_encoder", path)
    lazy = t5_to_official(raw)
    embedded = lazy[SPIECE_TENSOR_KEY] if SPIECE_TENSOR_KEY in lazy else None
    sd = lazy.with_entries({k: lazy.entry(k) for k in lazy.keys() if k != SPIECE_TENSOR_KEY})
    _check_umt5_position_tables(sd.keys(), path)
    config = T5Config.from_shapes(logical_shapes(sd), text_len=text_len)
    if isinstance(tokenizer, str) and not tokenizer.strip():
        tokenizer = None  # an empty path field means "none given"
    if tokenizer is None and embedded is None:
        raise TokenizerError(
            f"{path} carries no tokenizer (no '{SPIECE_TENSOR_KEY}' tensor, as in the official .pth). Give the "
            f"umT5 tokenizer: the spiece.model file of google/umt5-xxl (or its folder) as the tokenizer input."
        )
    source = tokenizer if tokenizer is not None else spiece_bytes_from_tensor(embedded)
    tok = load_tokenizer(source, text_len=config.text_len, pad_id=config.pad_id, eos_id=config.eos_id)
    if tok.vocab_size > config.vocab_size:
        raise TokenizerError(
            f"the tokenizer has {tok.vocab_size} pieces but the encoder only {config.vocab_size} embeddings: it is "
            f"not the umT5 tokenizer of this model. Use the spiece.model of google/umt5-xxl."
        )
    with empty_init():
        model = UMT5Encoder(config, ops=ops_for(sd))
    load_state_dict_into(model, sd, dtype, strict=True, what="umT5 text encoder")
    model.eval().requires_grad_(False)
    return TextEncoder(model, tok)


def load_image_encoder(path, dtype: torch.dtype = torch.float16, num_heads: int | None = None) -> ImageEncoder:
    """Load the visual tower from the official open-clip ``.pth`` or ComfyUI's ``clip_vision_h.safetensors``.

    Args:
        path: weight file (anything ``weight_files.open_state_dict`` opens); the text tower, ``post_norm``, ``head`` and
            the blocks after the one Wan reads are skipped.
        dtype: compute dtype (Wan runs CLIP in fp16).
        num_heads: attention heads, when the width is not a known ViT width (see ``CLIPVisionConfig.from_shapes``).
    Returns:
        ImageEncoder on the CPU.
    """
    raw = open_state_dict(path)
    expect_component(raw, "image_encoder", path)
    sd = clip_to_official(raw)
    config = CLIPVisionConfig.from_shapes(sd.shapes(), num_heads=num_heads)
    skipped = tuple(f"{VISUAL_PREFIX}transformer.{i}." for i in range(config.used_layers, config.num_layers))
    sd = sd.with_entries({k: sd.entry(k) for k in sd.keys()
                          if k.startswith(VISUAL_PREFIX) and not k.startswith(skipped)})
    with empty_init():
        tower = CLIPVisionTower(config, ops=ops_for(sd))
    holder = nn.Module()  # gives the tower its official ``visual.`` key prefix
    holder.visual = tower
    load_state_dict_into(holder, sd, dtype, strict=True, what="CLIP vision encoder")
    tower.eval().requires_grad_(False)
    return ImageEncoder(tower)
