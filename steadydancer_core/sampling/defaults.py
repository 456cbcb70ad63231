"""Sampling constants and defaults: solvers, steps, guidance scales and window, shift, area, segments, prompts.

The node widgets, the CLI options and ``GenerationSettings`` all take their defaults from here.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..model_files import preferred_file_name
from ..models.dit_config import DIT_CLIP_FRAMES, DIT_DEFAULT_AREA
from .noise import DEFAULT_NOISE_SOURCE

# --- sampling / pipeline ----------------------------------------------------------------------------------------
NUM_TRAIN_TIMESTEPS = 1000          # flow-matching training steps; timestep = int(sigma * 1000)
SOLVERS = ("unipc", "dpm++", "euler")
DEFAULT_SOLVER = "unipc"
SOLVER_ORDER = 2                    # UniPC (bh2) and DPM++ (midpoint) multistep order, as shipped
DEFAULT_STEPS = 40
DEFAULT_SHIFT = 5.0                 # official: 5.0 (3.0 recommended for 480p); "auto" = the official CLI's rule
OFFICIAL_480P_AREA = 832 * 480      # the official CLI's --size 832*480 / 480*832 (the only sizes where it uses 3.0)
OFFICIAL_480P_SHIFT = 3.0
OFFICIAL_SHIFT = 5.0                # the official CLI's shift at every other size (and generate()'s default)
DEFAULT_GUIDE_SCALE = 5.0           # text CFG
DEFAULT_CONDITION_GUIDE_SCALE = 1.0  # pose-condition CFG (README value; generate_dancer.py CLI default is 1.5)
DEFAULT_CONDITION_CFG_START = 0.1   # pose CFG active while start < step/steps < end (strict)
DEFAULT_CONDITION_CFG_END = 0.4
DEFAULT_MAX_AREA = DIT_DEFAULT_AREA  # pixels; output aspect follows the photo
LATENT_SIZE_MULTIPLE = 2            # latent h, w are multiples of the DiT spatial patch
DEFAULT_FRAMES_PER_SEGMENT = DIT_CLIP_FRAMES  # frames the model was trained on (4n + 1)
DEFAULT_SEGMENT_OVERLAP = 9         # frames shared by consecutive segments (4k + 1)
FIRST_FRAME_MODES = ("model", "latent", "exact")
# How pose frames reach the output size: "direct" = one PIL-bicubic resize straight to it; "official" = PIL bicubic
# to the photo's size, then torch bicubic to the output size (generate_dancer.py + generate()), one frame at a time.
POSE_RESIZE_MODES = ("direct", "official")
DEFAULT_POSE_RESIZE = "direct"
MASK_CHANNELS = 4                   # I2V mask channels in y (one per pixel frame of a latent frame)
WAN_I2V_NEGATIVE_PROMPT = (
    "镜头晃动，色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
DEFAULT_NEGATIVE_PROMPT = WAN_I2V_NEGATIVE_PROMPT  # used when the negative prompt is left empty
# step caching (step_cache.py); off by default: its quality with SteadyDancer's weights is not measured yet
STEP_CACHE_MODES = ("off", "teacache", "magcache")
DEFAULT_CACHE_THRESHOLD = 0.12      # MagCache's published default for Wan 2.1 (TeaCache's script default: 0.2)
DEFAULT_CACHE_KEEP_FIRST = 5        # TeaCache's retention steps for Wan 2.1 (also: a 4-step distill run skips nothing)
DEFAULT_CACHE_KEEP_LAST = 1         # the last step is always computed (TeaCache without retention steps does so)
DEFAULT_CACHE_MAX_SKIP = 2          # MagCache's K for Wan 2.1: at most 2 steps in a row are skipped per pass


def resolve_shift(shift, max_area: int):
    """``shift`` as a float. "auto" = the official CLI's rule (generate_dancer.py: 5.0, but 3.0 for I2V at
    ``--size`` 832*480 or 480*832, whose max area is 832*480 pixels); a number is returned as a float."""
    if isinstance(shift, str):
        if shift.strip().lower() != "auto":
            try:
                return float(shift)
            except ValueError:
                raise ValueError(f"shift must be a number or 'auto', got {shift!r}") from None
        return OFFICIAL_480P_SHIFT if max_area == OFFICIAL_480P_AREA else OFFICIAL_SHIFT
    if isinstance(shift, bool) or not isinstance(shift, (int, float)):
        raise ValueError(f"shift must be a number or 'auto', got {shift!r}")
    return float(shift)


# --- seeds ------------------------------------------------------------------------------------------------------
MAX_SEED = 2 ** 64 - 1              # seeds are unsigned 64-bit integers (ComfyUI's seed widget range)


def check_seed(value, name: str = "seed") -> int:
    """``value`` as an int in 0..MAX_SEED; a one-line ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ValueError(f"{name} must be an integer from 0 to 2**64-1, got {value!r}")
    return value


# --- the user-facing defaults -----------------------------------------------------------------------------------
# One table per node; the field names are the node widgets' names (and, in --kebab-case, the CLI's option names).
# The node widgets, the CLI options and therefore the bundled workflows read their defaults from these.
WAN_FPS = 16.0                      # frame rate of Wan 2.1's training clips


@dataclass(frozen=True)
class SamplerDefaults:
    prompt: str = "A person dancing, natural motion, high quality."
    negative_prompt: str = ""       # empty = Wan's default I2V negative prompt
    steps: int = DEFAULT_STEPS
    text_cfg: float = DEFAULT_GUIDE_SCALE
    pose_cfg: float = DEFAULT_CONDITION_GUIDE_SCALE
    pose_cfg_start: float = DEFAULT_CONDITION_CFG_START
    pose_cfg_end: float = DEFAULT_CONDITION_CFG_END
    shift: float = DEFAULT_SHIFT
    seed: int = 106060
    solver: str = DEFAULT_SOLVER
    length: int = DEFAULT_FRAMES_PER_SEGMENT
    max_area: int = DEFAULT_MAX_AREA
    first_frame: str = "latent"
    segment_frames: int = DEFAULT_FRAMES_PER_SEGMENT
    segment_overlap: int = DEFAULT_SEGMENT_OVERLAP
    color_correction: float = 1.0
    noise: str = DEFAULT_NOISE_SOURCE
    pose_resize: str = DEFAULT_POSE_RESIZE
    step_cache: str = "off"
    cache_threshold: float = DEFAULT_CACHE_THRESHOLD
    cache_keep_first: int = DEFAULT_CACHE_KEEP_FIRST
    cache_keep_last: int = DEFAULT_CACHE_KEEP_LAST
    cache_max_skip: int = DEFAULT_CACHE_MAX_SKIP


@dataclass(frozen=True)
class PoseDefaults:
    """ExtractPose and AlignPose."""

    detector: str = preferred_file_name("detector")        # the model file table's names
    pose_model: str = preferred_file_name("pose_model")
    person: str = "highest"
    no_person: str = "hold"
    max_frames: int = 0
    target_fps: float = WAN_FPS
    augment_seed: int = 0
    canvas: str = "2x"
    scale_fallback: str = "official"


@dataclass(frozen=True)
class PhotoDefaults:
    """The photo's options, shared by AlignPose and the sampler (and the CLI)."""

    background: str = "white"       # behind a photo's transparent parts (white, black or #RRGGBB)


SAMPLER = SamplerDefaults()
POSE = PoseDefaults()
PHOTO = PhotoDefaults()
