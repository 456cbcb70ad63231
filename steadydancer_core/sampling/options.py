"""The sampler's options: ``SAMPLER``, one row per option of the SteadyDancerSampler node (and its options node),
the CLI's generation options and ``GenerationSettings``' fields. ``PHOTO`` is the photo's own option (shared with
AlignPose). Defaults, ranges and help live here and nowhere else.

Unified defaults (node, CLI and Python API alike): ``first_frame`` ``exact`` (frame 0 is the photo pixel for pixel,
the promise of image-to-video, on random test weights as on the real ones), ``length`` 81 (one clip of the
model's training length: a first run finishes in minutes, not hours, even with a minute-long dance; 0 makes every
pose frame), ``seed`` 106060 (the official README example's) and a short generic prompt.
"""
from __future__ import annotations

from ..models.dit_config import DIT_CLIP_FRAMES, DIT_DEFAULT_AREA
from ..option import MAX_SEED, Option, OptionTable
from .defaults import (
    FIRST_FRAME_MODES,
    OFFICIAL_480P_AREA,
    POSE_RESIZE_MODES,
    SOLVERS,
    STEP_CACHE_MODES,
    TILING_MODES,
)
from .noise import NOISE_SOURCES
from .photo import check_background
from .segments import is_4n1

__all__ = ["SAMPLER", "VAE_TILING", "PHOTO", "MAX_SEED", "vae_tile"]


def _four_n_plus_one(value) -> str | None:
    return None if is_4n1(value) else "must be 4n+1 (5, 9, ..., 81, ...)"


SAMPLER = OptionTable("SteadyDancer Sampler", [
    # --- what an artist changes every time -----------------------------------------------------------------------
    Option("prompt", "text", "A person dancing, natural motion, high quality.", multiline=True, level="basic",
           help="What the video shows (the person, clothes, setting, motion)."),
    Option("steps", "int", 40, minimum=1, maximum=1000, step=1, level="basic",
           help="Sampling steps: 40 with the official settings, 4 with a step-distill LoRA (text_cfg 1)."),
    Option("text_cfg", "float", 5.0, minimum=0.0, maximum=30.0, step=0.1, level="basic",
           help="Text guidance scale (1 = off: one DiT pass less per step)."),
    Option("pose_cfg", "float", 1.0, minimum=0.0, maximum=30.0, step=0.1, level="basic",
           help="Pose guidance scale against the augmented negative poses, inside pose_cfg_start..pose_cfg_end "
                "(0 = off: one DiT pass less in the window)."),
    Option("seed", "seed", 106060, level="basic", help="Seed of the initial noise: the same seed gives the same video."),
    Option("length", "int", DIT_CLIP_FRAMES, minimum=0, maximum=100000, step=1, level="basic",
           zero="every pose frame",
           help="Frames to make (0 = every pose frame). Rounded down to 4n+1 with a notice; more than "
                "segment_frames makes a long video in overlapping segments."),
    Option("max_area", "int", DIT_DEFAULT_AREA, minimum=16 * 16, maximum=4096 * 4096, step=64, level="basic",
           unit="px",
           help=f"Pixel area of the video; the photo's aspect ratio is kept (1024*576 = {DIT_DEFAULT_AREA} as the "
                f"official example, 832*480 = {OFFICIAL_480P_AREA} for 24 GB cards)."),
    # --- expert --------------------------------------------------------------------------------------------------
    Option("negative_prompt", "text", "", multiline=True,
           help="What the video should not show; empty = Wan 2.1's default negative prompt."),
    Option("pose_cfg_start", "float", 0.1, minimum=0.0, maximum=1.0, step=0.01,
           help="Pose guidance starts after this fraction of the steps."),
    Option("pose_cfg_end", "float", 0.4, minimum=0.0, maximum=1.0, step=0.01,
           help="Pose guidance ends before this fraction of the steps (>= pose_cfg_start)."),
    Option("shift", "float", 5.0, minimum=0.1, maximum=100.0, step=0.1, auto=True,
           help="Flow-matching schedule shift (Wan: 5 for 720p, 3 for 480p); auto (CLI and Python): the official "
                f"rule, 3 at max_area {OFFICIAL_480P_AREA}, else 5."),
    Option("solver", "choice", "unipc", choices=SOLVERS, help="Sampler: unipc (official), dpm++ or euler."),
    Option("first_frame", "choice", "exact", choices=FIRST_FRAME_MODES,
           help="exact: frame 0 IS the photo, pixel for pixel (the photo's latent is also kept at every step); "
                "latent: the photo's latent is kept at every step, frame 0 is its VAE round trip (close to the "
                "photo, not identical); model: the official behaviour (the model re-makes frame 0)."),
    Option("segment_frames", "int", DIT_CLIP_FRAMES, minimum=5, maximum=1001, step=4, rule=_four_n_plus_one,
           rule_text="(4n+1)", help="Long videos: frames per segment (4n+1; 81 is the model's training length)."),
    Option("segment_overlap", "int", 9, minimum=1, maximum=997, step=4, rule=_four_n_plus_one,
           rule_text="(4n+1, less than segment_frames)",
           help="Long videos: frames each segment continues from the previous one (4n+1)."),
    Option("color_correction", "float", 1.0, minimum=0.0, maximum=1.0, step=0.05,
           help="Long videos: strength of matching each segment's colours to the previous one (0 = off)."),
    Option("noise", "choice", "cpu", choices=NOISE_SOURCES,
           help="cpu: the same video for a seed on every machine; official: noise drawn on the GPU as the official "
                "code does (a CUDA user gets the official CLI's video for the same seed)."),
    Option("pose_resize", "choice", "direct", choices=POSE_RESIZE_MODES,
           help="direct: each pose frame resized once, straight to the video's size (fast, little memory); "
                "official: first to the photo's size, then to the video's size, as the official pipeline (its exact "
                "numbers; slower, one frame at the photo's size in memory at a time)."),
    Option("step_cache", "choice", "off", choices=STEP_CACHE_MODES,
           help="Skip the DiT's blocks on steps where its output changes little and reuse the last change "
                "(TeaCache / MagCache, Wan 2.1 I2V calibrations): faster, at a quality cost set by "
                "cache_threshold; off = exact."),
    Option("cache_threshold", "float", 0.12, minimum=0.0, maximum=1e6, step=0.01,
           help="Higher skips more (0 = never; a huge value skips whenever the guards allow). Published starting "
                "points for Wan 2.1: magcache 0.12, teacache 0.2."),
    Option("cache_keep_first", "int", 5, minimum=0, maximum=1000, step=1,
           help="The first steps are always computed (they decide the motion)."),
    Option("cache_keep_last", "int", 1, minimum=0, maximum=1000, step=1, help="The last steps are always computed."),
    Option("cache_max_skip", "int", 2, minimum=0, maximum=1000, step=1,
           help="At most this many steps in a row are skipped per guidance pass (0 = never skip)."),
])

# the VAE's spatial tiling: the sampler's encodes and decodes (GenerationSettings, CLI) and DecodeVideo's decode
VAE_TILING = OptionTable("VAE tiling", [
    Option("tiling", "choice", "auto", choices=TILING_MODES,
           help="VAE spatial tiling: auto tiles only when the untiled pass does not fit the free memory; on uses "
                "tile_size; off never tiles (as the official code)."),
    Option("tile_size", "int", 256, minimum=64, maximum=2048, step=32, unit="px",
           help="VAE tile size in pixels when tiling is on."),
])



def vae_tile(tiling: str, tile_size: int):
    """The VAE's ``tile`` argument for the tiling options (checked by their rows): "auto", "off" or the tile size in
    pixels (``tiling`` on)."""
    tiling, tile_size = VAE_TILING["tiling"].check(tiling), VAE_TILING["tile_size"].check(tile_size)
    return tile_size if tiling == "on" else tiling


PHOTO = OptionTable("Photo", [
    Option("background", "text", "white", rule=check_background, rule_text="white, black or #RRGGBB",
           help="Colour behind a photo's transparent parts: white, black or #RRGGBB (e.g. #808080)."),
])
