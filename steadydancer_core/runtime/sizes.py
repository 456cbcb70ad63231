"""Byte sizes: of tensors and modules, and the DiT's sequence length and activation estimate for a video size.

Pure arithmetic on shapes and dtypes (no device is queried); the memory planner and the offloader both read it.
"""
from __future__ import annotations

import itertools

import torch
from torch import nn

from ..models.dit_config import DiTConfig
from ..models.vae_config import VAE_SPATIAL_STRIDE, VAE_TEMPORAL_STRIDE

OFFLOAD_REFERENCE_LATENT_FRAMES = 2   # ref_x and ref_c latents appended to the video latent in time
OFFLOAD_ACTIVATION_SAFETY = 1.1       # margin on the per-token activation estimate of a DiT block


def tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def module_bytes(module: nn.Module) -> int:
    """Bytes of all parameters and buffers of ``module`` (placeholders count at their real size)."""
    return sum(tensor_bytes(t) for t in itertools.chain(module.parameters(), module.buffers()))


def dtype_bytes(dtype: torch.dtype) -> int:
    if not dtype.is_floating_point or dtype.itemsize < 2:
        raise ValueError(f"dtype is the compute dtype of the activations (bf16, fp16 or fp32), got {dtype}; "
                         f"fp8/GGUF weights are dequantised to bf16 for compute, so pass torch.bfloat16")
    return dtype.itemsize


def dit_tokens(config: DiTConfig, width: int, height: int, frames: int) -> int:
    """Sequence length of one DiT forward: video latent frames plus the reference latents, patchified."""
    pt, ph, pw = config.patch_size
    latent_frames = 1 + (frames - 1) // VAE_TEMPORAL_STRIDE + OFFLOAD_REFERENCE_LATENT_FRAMES
    grid_h = height // VAE_SPATIAL_STRIDE // ph
    grid_w = width // VAE_SPATIAL_STRIDE // pw
    return (latent_frames // pt) * grid_h * grid_w


def dit_activation_bytes(config: DiTConfig, width: int, height: int, frames: int, dtype: torch.dtype,
                         passes_per_forward: int = 1, sequence: int = 1) -> int:
    """Estimated activation peak of one DiT forward over ``passes_per_forward`` batched passes (bytes).

    ``sequence`` > 1: one rank of a sequence-parallel group: the blocks' activations for its 1/sequence of the
    tokens with the send / receive buffers of the q / k / v exchange, next to the whole embedded sequence in
    float32 (kept for the step cache's residual); after the blocks, that sequence and the gathered output.
    """
    b = dtype_bytes(dtype)
    fp32 = 4 * config.dim                                         # one float32 row (the residual stream)
    attention = fp32 + 3 * b * config.dim + 3 * fp32 + (6 * b * config.dim if sequence > 1 else 0)
    ffn = 2 * fp32 + b * config.dim + 2 * b * config.ffn_dim
    rope = 3 * 4 * (config.head_dim // 2)                          # fp32 cos (per channel) and sin tables
    per_token = (max(attention, ffn) + rope) * OFFLOAD_ACTIVATION_SAFETY
    context = (config.clip_tokens + config.text_len) * config.dim * b * 6   # embedded context, k and v
    tokens = dit_tokens(config, width, height, frames)
    blocks = -(-tokens // sequence) * per_token
    if sequence > 1:
        blocks = max(blocks + tokens * fp32, 2 * tokens * fp32)
    per_pass = blocks + context
    scratch = config.dim * config.ffn_dim * b                      # one dequantised fp8/GGUF linear
    return int(passes_per_forward * per_pass + scratch)


def context_cache_bytes(config: DiTConfig, dtype: torch.dtype, rows: int,
                        key_dtype: torch.dtype = torch.float32) -> int:
    """Upper bound of what the DiT's context cache (``models/context_cache.py``) holds for ``rows`` cached context
    rows (one row per guidance pass of each cached batch), at the longest prompt (text_len tokens): per row the
    embedded context and every block's cross-attention keys and values, ``(clip_tokens + text_len) * dim`` values
    each in the compute dtype, plus the copies of the raw inputs it is keyed by (``key_dtype``)."""
    tokens = config.clip_tokens + config.text_len
    projections = tokens * config.dim * dtype_bytes(dtype) * (1 + 2 * config.num_layers)
    keys = (config.text_len * config.text_dim + 2 * config.clip_tokens * config.clip_dim) * key_dtype.itemsize
    return int(rows * (projections + keys))
