"""The CLI's options: the parser (option names = the node widgets' names in --kebab-case, defaults from the shared
tables) and the validators that turn a bad value into a one-line error naming the option."""
from __future__ import annotations

import argparse
import math

from . import (
    ATTENTION_BACKENDS,
    FIRST_FRAME_MODES,
    LOADER,
    NOISE_SOURCES,
    OFFLOAD_MODES,
    PHOTO,
    POSE,
    POSE_RESIZE_MODES,
    PRECISION_CHOICES,
    SAMPLER,
    SOLVERS,
    STEP_CACHE_MODES,
    WAN_FPS,
    check_max_vram_gb,
    check_seed,
    parse_background,
    resolve_shift,
    video_io,
)

ATTENTION_PACKAGES = {"flash-attn": ("flash_attn", "flash-attn"), "sageattention": ("sageattention", "sageattention")}


MIN_AREA, MAX_AREA = 64 * 64, 4096 * 4096        # the sampler node's max_area range


class CLIError(ValueError):
    """A problem with the command line's inputs; the message says what to change."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _number(text: str, minimum: float, inclusive: bool, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < minimum or (not inclusive and value == minimum):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def _positive(text: str) -> float:
    return _number(text, 0.0, False, "a finite number > 0")


def _non_negative(text: str) -> float:
    return _number(text, 0.0, True, "a finite number >= 0")


def _int_range(low: int, high: int | None, hint: str = ""):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be an integer {bound}{hint}, got {text!r}")
        return value
    return parse


def _background(text: str) -> tuple:
    """--background: white, black or #RRGGBB -> (r, g, b)."""
    try:
        return parse_background(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be white, black or #RRGGBB (e.g. #808080), got {text!r}") from None


def _seed(text: str) -> int:
    """argparse type of the seed options: an integer in 0..2**64-1."""
    try:
        return check_seed(int(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err) if "2**64" in str(err) else f"not an integer: {text!r}") from err


def _vram(text: str) -> float:
    try:
        value = float(text)
        check_max_vram_gb(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"must be a number of GB >= 0 (0 = the free VRAM), got {text!r}") from err
    return value


def build_parser() -> argparse.ArgumentParser:
    """The options are the node widgets' names in --kebab-case, with the same defaults (``defaults.SAMPLER``,
    ``defaults.POSE``, ``bundle.LOADER``)."""
    pose = pose_package()
    p = _Parser(prog="python -m steadydancer_core.cli", description=(
        "SteadyDancer: animate a photo with the motion of a driving video (first frame = the photo)."))
    io = p.add_argument_group("inputs and output")
    io.add_argument("--photo", required=True,
                    help="the photo to animate (png/jpg/webp/bmp; transparency is composited on --background)")
    io.add_argument("--background", type=_background, default=PHOTO.background, metavar="white|black|#RRGGBB",
                    help=f"colour behind a photo with transparency (default {PHOTO.background})")
    src = io.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", help="driving dance video (mp4/webm/mov/gif)")
    src.add_argument("--pose-dir", help="aligned pose frames: DIR/positive/* and DIR/negative/* (or images in DIR)")
    io.add_argument("--out", required=True, help="output .mp4 (H.264); written beside, renamed when complete")
    io.add_argument("--overwrite", action="store_true",
                    help="replace an existing --out (only once the new video is complete); without it, refused")
    io.add_argument("--fps", type=_positive, default=None,
                    help="output frame rate (default: the pose frame rate, i.e. --target-fps, or the driving "
                         f"video's own rate when that is 0; {WAN_FPS:g} with --pose-dir)")
    io.add_argument("--crf", type=_int_range(0, 51), default=video_io.DEFAULT_CRF, help="x264 quality, lower = better")
    m = p.add_argument_group("model files and loading")
    m.add_argument("--models", metavar="DIR",
                   help="a ComfyUI models folder: every model file below is found there by its standard name")
    m.add_argument("--dit", help="SteadyDancer DiT (.safetensors / .gguf / official folder); overrides --models")
    m.add_argument("--vae", help="Wan 2.1 VAE; overrides --models")
    m.add_argument("--t5", help="umT5-XXL text encoder; overrides --models")
    m.add_argument("--clip", help="CLIP ViT-H vision encoder; overrides --models")
    m.add_argument("--tokenizer", default=None, help="umT5 tokenizer when the T5 file carries none")
    m.add_argument("--lora", action="append", default=[], metavar="PATH[:STRENGTH]", help="LoRA (repeatable)")
    m.add_argument("--precision", choices=PRECISION_CHOICES, default=LOADER.precision,
                   help="compute dtype; auto: bf16 on a CUDA device with bf16, fp16 on other CUDA devices, else fp32")
    m.add_argument("--fp8-matmul", action="store_true", default=LOADER.fp8_matmul,
                   help="multiply the DiT's fp8 e4m3 weights in fp8 on GPUs of compute capability 8.9+ (else they "
                        "are upcast as without it; the log says which)")
    m.add_argument("--attention", choices=ATTENTION_BACKENDS, default=LOADER.attention,
                   help="sdpa works everywhere; the others need their package")
    m.add_argument("--offload", choices=OFFLOAD_MODES, default=LOADER.offload,
                   help="auto: plan from the free VRAM; all_resident: every DiT block on the GPU; block_swap: "
                        "stream --blocks-to-swap blocks from CPU memory")
    m.add_argument("--blocks-to-swap", type=_int_range(0, None), default=LOADER.blocks_to_swap, help="used by --offload block_swap")
    m.add_argument("--max-vram-gb", type=_vram, default=LOADER.max_vram_gb,
                   help="use at most this much GPU memory (GB; 0 = the free VRAM)")
    m.add_argument("--compile", action="store_true", default=LOADER.compile,
                   help="torch.compile the DiT blocks (compiled once at the first step; needs a C++ compiler on the "
                        "CPU or triton on CUDA, else it runs uncompiled with a warning)")
    e = p.add_argument_group("poses (with --video)")
    e.add_argument("--detector", help=f"YOLOX person detector ONNX (e.g. {POSE.detector})")
    e.add_argument("--pose-model", help=f"DWPose ONNX (e.g. {POSE.pose_model})")
    e.add_argument("--person", choices=pose.PERSON_MODES, default=POSE.person, help="who drives the motion")
    e.add_argument("--no-person", choices=pose.MISSING_MODES, default=POSE.no_person,
                   help="frames without a person: hold the nearest earlier pose, or leave the frame empty")
    e.add_argument("--max-frames", type=_int_range(0, None), default=POSE.max_frames,
                   help="use at most this many driving frames (0 = all)")
    e.add_argument("--target-fps", type=_non_negative, default=POSE.target_fps,
                   help="resample the driving video to this rate before extracting poses (0 keeps every frame)")
    e.add_argument("--augment-seed", type=_seed, default=POSE.augment_seed, help="negative-pose augmentation seed")
    e.add_argument("--canvas", choices=("2x", "1x"), default=POSE.canvas,
                   help="pose frames drawn at twice the resized photo (official) or at its size")
    e.add_argument("--scale-fallback", choices=("official", "visible"), default=POSE.scale_fallback,
                   help="visible: limbs not visible in the photo use the mean scale of the visible ones")
    g = p.add_argument_group("generation")
    g.add_argument("--prompt", default=SAMPLER.prompt, help="what the video shows")
    g.add_argument("--negative-prompt", default=SAMPLER.negative_prompt, help="empty: Wan's I2V negative prompt")
    g.add_argument("--seed", type=_seed, default=SAMPLER.seed)
    g.add_argument("--steps", type=_int_range(1, None), default=SAMPLER.steps)
    g.add_argument("--solver", choices=SOLVERS, default=SAMPLER.solver)
    g.add_argument("--shift", type=_shift, default=SAMPLER.shift,
                   help="schedule shift, or auto: the official CLI's rule (3.0 at --max-area 399360, else 5.0)")
    g.add_argument("--text-cfg", type=_non_negative, default=SAMPLER.text_cfg, help="text guidance (1 = off)")
    g.add_argument("--pose-cfg", type=_non_negative, default=SAMPLER.pose_cfg, help="pose guidance (0 = off)")
    g.add_argument("--pose-cfg-start", type=_non_negative, default=SAMPLER.pose_cfg_start,
                   help="pose guidance starts at this fraction of the steps")
    g.add_argument("--pose-cfg-end", type=_non_negative, default=SAMPLER.pose_cfg_end,
                   help="pose guidance ends at this fraction of the steps")
    g.add_argument("--max-area", type=_int_range(MIN_AREA, MAX_AREA, " (64*64 .. 4096*4096)"), default=SAMPLER.max_area, help="output pixels (aspect of the photo)")
    g.add_argument("--length", type=_int_range(0, None), default=SAMPLER.length, help="frames to generate (0 = all pose frames)")
    g.add_argument("--first-frame", choices=FIRST_FRAME_MODES, default=SAMPLER.first_frame)
    g.add_argument("--segment-frames", type=int, default=SAMPLER.segment_frames)
    g.add_argument("--segment-overlap", type=int, default=SAMPLER.segment_overlap)
    g.add_argument("--color-correction", type=float, default=SAMPLER.color_correction)
    g.add_argument("--noise", choices=NOISE_SOURCES, default=SAMPLER.noise,
                   help="cpu: the same video for a seed on every machine; official: drawn on the execution device "
                        "as the official code does (on CUDA: the official CLI's noise for the seed)")
    g.add_argument("--pose-resize", choices=POSE_RESIZE_MODES, default=SAMPLER.pose_resize,
                   help="direct: each pose frame resized once, straight to the output size; official: first to the "
                        "photo's size, then to the output size, as the official pipeline (slower, more memory per "
                        "frame with a large photo)")
    c = p.add_argument_group("step cache (skips DiT blocks on steps that change little; off = exact)")
    c.add_argument("--step-cache", choices=STEP_CACHE_MODES, default=SAMPLER.step_cache,
                   help="teacache / magcache with their Wan 2.1 I2V calibrations")
    c.add_argument("--cache-threshold", type=_non_negative, default=SAMPLER.cache_threshold,
                   help="higher skips more (0 = never); published starting points: magcache 0.12, teacache 0.2")
    c.add_argument("--cache-keep-first", type=_int_range(0, None), default=SAMPLER.cache_keep_first,
                   help="the first steps are always computed")
    c.add_argument("--cache-keep-last", type=_int_range(0, None), default=SAMPLER.cache_keep_last,
                   help="the last steps are always computed")
    c.add_argument("--cache-max-skip", type=_int_range(0, None), default=SAMPLER.cache_max_skip,
                   help="at most this many steps in a row are skipped per guidance pass (0 = never skip)")
    return p


def _shift(value: str):
    """--shift: a number or "auto" (kept as "auto"; GenerationSettings resolves it from the max area)."""
    if value.strip().lower() == "auto":
        return "auto"
    try:
        shift = resolve_shift(value, 0)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if not math.isfinite(shift) or shift <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0 or 'auto', got {value!r}")
    return shift


def pose_package():
    """The pose package beside steadydancer_core: a subpackage of the node pack inside ComfyUI, a top-level
    package when the repository root is on sys.path."""
    try:
        from .. import pose  # type: ignore[no-redef]  (inside the node pack)
    except (ImportError, ValueError):
        import pose  # the repository root is on sys.path (python -m steadydancer_core.cli)
    return pose
