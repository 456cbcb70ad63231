"""Frozen, validated configuration dataclasses and the model constants.

Every size that the real checkpoints fix (CLIP token count, text length, frame rules, ...) lives here, so the
rest of the code never hard-codes 81, 257 or 512. Each component owns one section below.
"""
from __future__ import annotations

from dataclasses import dataclass

# --- shared constants ---------------------------------------------------------------------------------------
VAE_TEMPORAL_STRIDE = 4          # latent frames = 1 + (frames - 1) // 4  (frames must be 4n + 1)
VAE_SPATIAL_STRIDE = 8
LATENT_CHANNELS = 16

# --- DiT -----------------------------------------------------------------------------------------------------

# --- VAE -----------------------------------------------------------------------------------------------------

# --- umT5 text encoder -----------------------------------------------------------------------------------------

# --- CLIP vision -------------------------------------------------------------------------------------------------

# --- sampling / pipeline ----------------------------------------------------------------------------------------
