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
NUM_TRAIN_TIMESTEPS = 1000          # flow-matching training steps; timestep = int(sigma * 1000)
SOLVERS = ("unipc", "dpm++", "euler")
DEFAULT_SOLVER = "unipc"
SOLVER_ORDER = 2                    # UniPC (bh2) and DPM++ (midpoint) multistep order, as shipped
DEFAULT_STEPS = 40
DEFAULT_SHIFT = 5.0                 # official: 5.0 (3.0 recommended for 480p)
DEFAULT_GUIDE_SCALE = 5.0           # text CFG
DEFAULT_CONDITION_GUIDE_SCALE = 1.0  # pose-condition CFG (README value; generate_dancer.py CLI default is 1.5)
DEFAULT_CONDITION_CFG_START = 0.1   # pose CFG active while start < step/steps < end (strict)
DEFAULT_CONDITION_CFG_END = 0.4
DEFAULT_MAX_AREA = 1024 * 576       # pixels; output aspect follows the photo
LATENT_SIZE_MULTIPLE = 2            # latent h, w are multiples of the DiT spatial patch
DEFAULT_FRAMES_PER_SEGMENT = 81     # frames the model was trained on (4n + 1)
DEFAULT_SEGMENT_OVERLAP = 9         # frames shared by consecutive segments (4k + 1)
FIRST_FRAME_MODES = ("model", "latent", "exact")
MASK_CHANNELS = 4                   # I2V mask channels in y (one per pixel frame of a latent frame)
WAN_I2V_NEGATIVE_PROMPT = (
    "镜头晃动，色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
# Wan 2.1 latent -> RGB preview projection ([16][3] and bias), in normalised-latent space.
WAN21_LATENT_RGB_FACTORS = (
    (-0.1299, -0.1692, 0.2932), (0.0671, 0.0406, 0.0442), (0.3568, 0.2548, 0.1747), (0.0372, 0.2344, 0.1420),
    (0.0313, 0.0189, -0.0328), (0.0296, -0.0956, -0.0665), (-0.3477, -0.4059, -0.2925), (0.0166, 0.1902, 0.1975),
    (-0.0412, 0.0267, -0.1364), (-0.1293, 0.0740, 0.1636), (0.0680, 0.3019, 0.1128), (0.0032, 0.0581, 0.0639),
    (-0.1251, 0.0927, 0.1699), (0.0060, -0.0633, 0.0005), (0.3477, 0.2275, 0.2950), (0.1984, 0.0913, 0.1861),
)
WAN21_LATENT_RGB_BIAS = (-0.1835, -0.0868, -0.3360)
