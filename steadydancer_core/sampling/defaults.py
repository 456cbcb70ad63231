"""Sampling constants and vocabularies: solvers, first-frame modes, pose resizing, step cache, tiling, the official
shift rule and Wan's negative prompt. The user-facing options (defaults, ranges, help) are ``options.SAMPLER``.
"""
from __future__ import annotations

# --- sampling / pipeline ----------------------------------------------------------------------------------------
NUM_TRAIN_TIMESTEPS = 1000          # flow-matching training steps; timestep = int(sigma * 1000)
SOLVERS = ("unipc", "dpm++", "euler")
SOLVER_ORDER = 2                    # UniPC (bh2) and DPM++ (midpoint) multistep order, as shipped
OFFICIAL_480P_AREA = 832 * 480      # the official CLI's --size 832*480 / 480*832 (the only sizes where it uses 3.0)
OFFICIAL_480P_SHIFT = 3.0
OFFICIAL_SHIFT = 5.0                # the official CLI's shift at every other size (and generate()'s default)
LATENT_SIZE_MULTIPLE = 2            # latent h, w are multiples of the DiT spatial patch
FIRST_FRAME_MODES = ("exact", "latent", "model")
# How pose frames reach the output size: "direct" = one PIL-bicubic resize straight to it; "official" = PIL bicubic
# to the photo's size, then torch bicubic to the output size (generate_dancer.py + generate()), one frame at a time.
POSE_RESIZE_MODES = ("direct", "official")
TILING_MODES = ("auto", "off", "on")  # the VAE's spatial tiling (auto: only when the untiled pass does not fit)
MASK_CHANNELS = 4                   # I2V mask channels in y (one per pixel frame of a latent frame)
WAN_I2V_NEGATIVE_PROMPT = (
    "镜头晃动，色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
# step caching (step_cache.py); off by default: its quality with SteadyDancer's weights is not measured yet
STEP_CACHE_MODES = ("off", "teacache", "magcache")
WAN_FPS = 16.0                      # frame rate of Wan 2.1's training clips


def resolve_shift(shift, max_area: int) -> float:
    """``shift`` as a float: "auto" = the official CLI's rule (generate_dancer.py: 5.0, but 3.0 for I2V at ``--size``
    832*480 or 480*832, whose max area is 832*480 pixels); a number is returned as a float."""
    if shift == "auto":
        return OFFICIAL_480P_SHIFT if max_area == OFFICIAL_480P_AREA else OFFICIAL_SHIFT
    return float(shift)
