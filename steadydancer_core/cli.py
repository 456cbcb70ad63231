"""Headless SteadyDancer: photo + driving video (or pose frames) + prompt + model files -> mp4, without ComfyUI.

    python -m steadydancer_core.cli --photo me.png --video dance.mp4 --prompt "a person dancing" \\
        --dit Wan21_SteadyDancer_fp8_e4m3fn_scaled_KJ.safetensors --vae wan_2.1_vae.safetensors \\
        --t5 umt5_xxl_fp8_e4m3fn_scaled.safetensors --clip clip_vision_h.safetensors \\
        --detector yolox_l.onnx --pose-model dw-ll_ucoco_384.onnx --out out.mp4
    python -m steadydancer_core.cli --photo me.png --video dance.mp4 --models ComfyUI/models --out out.mp4

``--pose-dir D`` replaces ``--video`` (and the pose models) with already aligned pose frames: ``D/positive/*``
and ``D/negative/*`` images (the official preprocessing output), or images directly in ``D``. The video is written
segment by segment while generating, so memory does not grow with its length.

Every option that has a node widget is named after it in --kebab-case (``pose_cfg_start`` -> ``--pose-cfg-start``;
AlignPose's ``augment_seed`` -> ``--augment-seed``) and has the widget's default, so a run without options matches
the bundled workflows' settings.

``--models DIR`` (a ComfyUI ``models`` folder) finds every model file by its standard name; ``--dit`` & co. override
single files. Every option and input is checked before any model is loaded.

The output is written to a temporary file beside ``--out`` and renamed into place only when the video is complete:
a failed or interrupted run leaves no partial file and never deletes one it did not create. An existing ``--out`` is
refused unless ``--overwrite`` is given (it is then replaced only on success); an ``--out`` that is a folder or one
of the run's inputs is always refused.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from . import (
    ATTENTION_BACKENDS,
    FIRST_FRAME_MODES,
    LOADER,
    NOISE_SOURCES,
    OFFLOAD_MODES,
    POSE,
    PRECISIONS,
    SAMPLER,
    SAMPLER_OPTIONS,
    SOLVERS,
    WAN_FPS,
    check_max_vram_gb,
    check_seed,
    generate,
    generation_settings,
    load_model,
    resize_like_pil,
    resolve_shift,
    video_io,
)
from .safe_write import write_beside

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
OUT_SUFFIX = ".mp4"
MIN_AREA, MAX_AREA = 64 * 64, 4096 * 4096        # the sampler node's max_area range
ATTENTION_PACKAGES = {"flash-attn": ("flash_attn", "flash-attn"), "sageattention": ("sageattention", "sageattention")}
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0)}

# --models DIR: standard file names in a ComfyUI models folder, in order of preference
DIT_DIRS = ("diffusion_models", "steadydancer")
DIT_NAMES = ("Wan21_SteadyDancer_fp8_e4m3fn_scaled_KJ.safetensors", "Wan21_SteadyDancer_fp16.safetensors")
DIT_FOLDER = "SteadyDancer-14B"                   # the official release (sharded safetensors + config.json)
MODEL_FILES = {  # option -> (what, folders, names)
    "vae": ("VAE", ("vae",), ("wan_2.1_vae.safetensors",)),
    "t5": ("umT5 text encoder", ("text_encoders", "clip"),
           ("umt5_xxl_fp8_e4m3fn_scaled.safetensors", "umt5_xxl_fp16.safetensors")),
    "clip": ("CLIP vision encoder", ("clip_vision",), ("clip_vision_h.safetensors",)),
    "detector": ("DWPose person detector", ("dwpose",), (POSE.detector,)),
    "pose_model": ("DWPose pose model", ("dwpose",), (POSE.pose_model,)),
}
log = logging.getLogger("steadydancer")


class CLIError(ValueError):
    """A problem with the command line's inputs; the message says what to change."""


def _pose_package():
    try:
        from .. import pose  # type: ignore[no-redef]  (inside the node pack)
    except (ImportError, ValueError):
        import pose  # the repository root is on sys.path (python -m steadydancer_core.cli)
    return pose


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
    name = text.strip().lower()
    if name in BACKGROUNDS:
        return BACKGROUNDS[name]
    if len(name) == 7 and name[0] == "#":
        try:
            return tuple(int(name[i:i + 2], 16) for i in (1, 3, 5))
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(f"must be white, black or #RRGGBB (e.g. #808080), got {text!r}")


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
    pose = _pose_package()
    p = _Parser(prog="python -m steadydancer_core.cli", description=(
        "SteadyDancer: animate a photo with the motion of a driving video (first frame = the photo)."))
    io = p.add_argument_group("inputs and output")
    io.add_argument("--photo", required=True,
                    help="the photo to animate (png/jpg/webp/bmp; transparency is composited on --background)")
    io.add_argument("--background", type=_background, default=BACKGROUNDS["white"], metavar="white|black|#RRGGBB",
                    help="colour behind a photo with transparency (default white)")
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
    m.add_argument("--precision", choices=tuple(PRECISIONS), default=LOADER.precision)
    m.add_argument("--attention", choices=ATTENTION_BACKENDS, default=LOADER.attention,
                   help="sdpa works everywhere; the others need their package")
    m.add_argument("--offload", choices=OFFLOAD_MODES, default=LOADER.offload,
                   help="auto: plan from the free VRAM; all_resident: every DiT block on the GPU; block_swap: "
                        "stream --blocks-to-swap blocks from CPU memory")
    m.add_argument("--blocks-to-swap", type=_int_range(0, None), default=LOADER.blocks_to_swap, help="used by --offload block_swap")
    m.add_argument("--max-vram-gb", type=_vram, default=LOADER.max_vram_gb,
                   help="use at most this much GPU memory (GB; 0 = the free VRAM)")
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


def read_image(path: str | Path, background: tuple | None = None) -> np.ndarray:
    """uint8 RGB [H, W, 3] of an image file (any path, unicode included).

    ``background`` (r, g, b): an image with transparency (RGBA / LA, or a palette with a transparent colour) is
    composited on it, with one log line saying so; None keeps the colour channels as stored.
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise CLIError(f"image not found: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None   # applies the EXIF orientation
    if image is None:
        raise CLIError(f"{path} is not a readable image; use a png, jpg, webp or bmp file")
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if background is None:
        return rgb
    full = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)                        # keeps the alpha channel
    if full is None or full.ndim != 3 or full.shape[2] not in (2, 4) or full.shape[:2] != rgb.shape[:2]:
        return rgb
    alpha = full[..., -1:].astype(np.float32) / (65535.0 if full.dtype == np.uint16 else 255.0)
    if float(alpha.min()) >= 1.0:
        return rgb                                                         # an alpha channel, all opaque
    back = np.asarray(background, np.float32).reshape(1, 1, 3)
    out = rgb.astype(np.float32) * alpha + back * (1.0 - alpha)
    log.info("%s has transparency: composited on background #%02X%02X%02X (choose with --background)",
             path.name, *background)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _to_float(images: Sequence[np.ndarray] | np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.stack(list(images)))).float().div_(255.0)


def _image_files(folder: Path) -> list:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def load_pose_dir(folder: str | Path, size_hw: tuple) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(positive, negative or None) frames [T, H, W, 3] in [0, 1] from a pose folder, resized to ``size_hw``."""

    folder = Path(folder)
    if not folder.is_dir():
        raise CLIError(f"pose folder not found: {folder}")
    pos_dir = folder / "positive" if (folder / "positive").is_dir() else folder
    neg_dir = folder / "negative" if (folder / "negative").is_dir() else None
    positive = _image_files(pos_dir)
    if not positive:
        raise CLIError(f"no pose images ({', '.join(IMAGE_SUFFIXES)}) in {pos_dir}")
    load = lambda files: torch.cat([resize_like_pil(_to_float([read_image(f)]), size_hw) for f in files])  # noqa: E731
    negative = _image_files(neg_dir) if neg_dir is not None else []
    if neg_dir is not None and len(negative) < len(positive):
        raise CLIError(f"{neg_dir} has {len(negative)} images but {pos_dir} has {len(positive)}; they must match")
    return load(positive), (load(negative[:len(positive)]) if negative else None)


def poses_from_video(args, photo: np.ndarray, progress) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, float, list]:
    """Extract, align and render the driving poses -> (resized photo, positive, negative, pose fps, notices)."""
    pose = _pose_package()
    if not args.detector or not args.pose_model:
        raise CLIError(f"--video needs --detector ({POSE.detector}) and --pose-model ({POSE.pose_model}); or pass "
                       "--pose-dir with already aligned pose frames")

    notices = []
    info = video_io.probe_video(args.video)
    target_fps = args.target_fps or None
    if target_fps is not None and info.fps and abs(info.fps - target_fps) > 1e-3:
        notices.append(f"driving video {info.fps:g} fps resampled to {target_fps:g} fps")
    frames = (f for chunk in video_io.iter_video_frames(args.video, max_frames=args.max_frames or None,
                                                       target_fps=target_fps)
              for f in (chunk.mul(255).round().to(torch.uint8).numpy()))
    reference, resized = pose.extract_reference(photo, args.detector, args.pose_model, person=args.person)
    sequence = pose.extract(frames, args.detector, args.pose_model, person=args.person, on_missing=args.no_person,
                            progress=progress)
    if sequence.missing_frames:
        how = "held the nearest pose" if args.no_person == "hold" else "left empty"
        notices.append(f"no person in {len(sequence.missing_frames)} driving frames ({how})")
    aligned = pose.align(reference, sequence, scale_fallback=args.scale_fallback)
    out_hw = None if args.canvas == "2x" else tuple(v // 2 for v in aligned.canvas_hw)
    size_hw = tuple(resized.shape[:2])
    positive, negative = [], []
    for frame, neg in zip(aligned, pose.augment_frames(aligned, args.augment_seed)):
        for out, f in ((positive, frame), (negative, neg)):
            rendered = pose.render(f, aligned.canvas_hw, output_hw=out_hw)
            out.append(resize_like_pil(_to_float([rendered]), size_hw))
    return resized, torch.cat(positive), torch.cat(negative), float(target_fps or info.fps or WAN_FPS), notices


def _loras(specs: Sequence[str]) -> list:
    out = []
    for spec in specs:
        path, _, strength = spec.rpartition(":") if ":" in Path(spec).name else (spec, "", "")
        try:
            value = float(strength) if strength else 1.0
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise CLIError(f"--lora {spec!r}: strength after ':' must be a finite number, e.g. path.safetensors:0.8")
        out.append((path, value))
    return out


def _find_dit(root: Path) -> Path:
    folders = [root / d for d in DIT_DIRS]
    for name in DIT_NAMES:
        for folder in folders:
            found = _find_file(folder, name)
            if found is not None:
                return found
    for folder in folders:
        ggufs = sorted(f for f in (folder.rglob("*.gguf") if folder.is_dir() else ())
                       if "steadydancer" in f.name.lower() and f.is_file())
        if ggufs:
            if len(ggufs) > 1:
                log.info("--models: %d SteadyDancer GGUF files in %s; using %s (choose with --dit)",
                         len(ggufs), folder, ggufs[0].name)
            return ggufs[0]
    for folder in folders:
        candidate = folder / DIT_FOLDER
        if (candidate / "config.json").is_file():
            return candidate
    raise CLIError(f"--models {root}: no SteadyDancer DiT; looked for {', '.join(DIT_NAMES)}, a .gguf whose name "
                   f"contains SteadyDancer, or a {DIT_FOLDER}/ folder with config.json, in "
                   f"{' and '.join(str(f) for f in folders)}; put one there or pass --dit PATH")


def _find_file(folder: Path, name: str) -> Path | None:
    """``folder/name``, else the first ``name`` in a subfolder of ``folder``."""
    if (folder / name).is_file():
        return folder / name
    if folder.is_dir():
        return next((f for f in sorted(folder.rglob(name)) if f.is_file()), None)
    return None


def resolve_models(args) -> None:
    """Fill the model paths left empty from ``--models DIR`` (the explicit options win); with --video also the
    DWPose files. A missing file: a CLIError listing what was looked for where."""
    needed = ["dit", "vae", "t5", "clip"] + (["detector", "pose_model"] if args.video else [])
    if args.models is None:
        missing = [n for n in needed[:4] if getattr(args, n) is None]
        if missing:
            names = ", ".join(f"--{n.replace('_', '-')}" for n in missing)
            raise CLIError(f"no model files given ({names}); pass --models DIR (a ComfyUI models folder) or each "
                           "file with --dit, --vae, --t5 and --clip")
        return
    root = Path(args.models)
    if not root.is_dir():
        raise CLIError(f"--models {root}: folder not found; pass the ComfyUI models folder (the one holding "
                       "diffusion_models/, vae/, text_encoders/, clip_vision/)")
    for name in needed:
        if getattr(args, name) is not None:
            continue
        if name == "dit":
            found = _find_dit(root)
        else:
            what, folders, names = MODEL_FILES[name]
            found = next((f for n in names for d in folders if (f := _find_file(root / d, n)) is not None), None)
            if found is None:
                raise CLIError(f"--models {root}: no {what}; looked for {' or '.join(names)} in "
                               f"{' and '.join(str(root / d) for d in folders)}; put it there or pass "
                               f"--{name.replace('_', '-')} PATH")
        log.info("--models: %s = %s", name.replace("_", "-"), found)
        setattr(args, name, str(found))


def _inputs(args) -> list:
    """(option, path, kind) of every input the run reads; kind: file, dir or any."""
    items = [("--photo", args.photo, "file")]
    items += [("--video", args.video, "file")] if args.video else [("--pose-dir", args.pose_dir, "dir")]
    items += [("--dit", args.dit, "any"), ("--vae", args.vae, "file"), ("--t5", args.t5, "file"),
              ("--clip", args.clip, "file")]
    if args.video:
        items += [(f"--{n.replace('_', '-')}", getattr(args, n), "file") for n in ("detector", "pose_model")
                  if getattr(args, n) is not None]
    if args.tokenizer:
        items.append(("--tokenizer", args.tokenizer, "any"))
    items += [("--lora", path, "file") for path, _ in _loras(args.lora)]
    return items


def _check_out(args, inputs) -> Path:
    out = Path(args.out)
    if out.is_dir():
        raise CLIError(f"--out {out} is a folder; give a file path, e.g. {out / 'steadydancer.mp4'}")
    if os.path.lexists(out):
        for option, path, _ in inputs:
            path = Path(path)
            same = out.exists() and os.path.samefile(out, path)
            inside = path.is_dir() and out.resolve().is_relative_to(path.resolve())
            if same or inside:
                raise CLIError(f"--out {out} is {'' if same else 'inside '}the input {option} {path}; "
                               "write the video to another path")
    if out.suffix.lower() != OUT_SUFFIX:
        raise CLIError(f"--out {out}: the output is an mp4; give a path ending in {OUT_SUFFIX}")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CLIError(f"--out {out}: {parent} is a file, not a folder; choose another output path")
            break
    if os.path.lexists(out) and not args.overwrite:
        raise CLIError(f"--out {out} exists; pass --overwrite to replace it (only once the new video is "
                       "complete) or choose another path")
    return out


def check_args(args) -> Path:
    """Every check that needs no model: model paths (from --models), inputs, output, sampler options, attention
    backend. Returns the output path."""
    def check(items) -> None:
        for option, path, kind in items:
            p = Path(path)
            if not (p.is_file() if kind == "file" else p.is_dir() if kind == "dir" else p.exists()):
                what = {"file": "file", "dir": "folder", "any": "file or folder"}[kind]
                what = "image" if option == "--photo" else what
                raise CLIError(f"{option} {p}: {what} not found; check the path")

    check(_inputs(args)[:2])                       # the photo and the video / pose folder first
    resolve_models(args)
    if args.video and (not args.detector or not args.pose_model):
        raise CLIError(f"--video needs --detector ({POSE.detector}) and --pose-model ({POSE.pose_model}) (or "
                       "--models DIR holding dwpose/); or pass --pose-dir with already aligned pose frames")
    inputs = _inputs(args)
    check(inputs)
    out = _check_out(args, inputs)
    if args.attention in ATTENTION_PACKAGES:
        module, package = ATTENTION_PACKAGES[args.attention]
        if importlib.util.find_spec(module) is None:
            raise CLIError(f"--attention {args.attention} needs the {package} package (pip install {package}); "
                           "or use --attention sdpa")
    try:
        generation_settings({name: getattr(args, name) for name in SAMPLER_OPTIONS})
    except ValueError as err:
        text = str(err)
        first = text.split(" ", 1)[0]
        if first == "pose_cfg_window":
            raise CLIError(f"--pose-cfg-start/--pose-cfg-end: {text}") from None
        raise CLIError(f"--{first.replace('_', '-')} {text.split(' ', 1)[1]}" if first in SAMPLER_OPTIONS
                       else text) from None
    return out


def run(args) -> Path:
    """Generate the video described by parsed ``args``; returns the output path."""
    from tqdm import tqdm

    out = check_args(args)
    photo = read_image(args.photo, background=args.background)
    notices = []
    if args.video:
        with tqdm(desc="poses", unit="frame") as bar:
            photo, positive, negative, pose_fps, notes = poses_from_video(
                args, photo, lambda done: bar.update(done - bar.n))
        notices += notes
    else:
        positive, negative = load_pose_dir(args.pose_dir, tuple(photo.shape[:2]))
        pose_fps = args.target_fps or WAN_FPS
    fps = args.fps or pose_fps
    options = {name: getattr(args, name) for name in SAMPLER_OPTIONS}
    if negative is None:
        negative = positive
        if options["pose_cfg"] != 0.0:
            # the pose term is pose_cfg * (cond - uncond_pose): 0 switches it off and saves a pass
            notices.append(f"no negative pose frames in {args.pose_dir}: pose CFG {options['pose_cfg']:g} -> 0 (off)")
            options["pose_cfg"] = 0.0
    settings = generation_settings(options)
    for note in notices:
        log.warning(note)
    log.info("loading models")
    model = load_model(args.dit, args.vae, args.t5, args.clip, precision=args.precision, attention=args.attention,
                       loras=_loras(args.lora), offload=args.offload, blocks_to_swap=args.blocks_to_swap,
                       tokenizer_path=args.tokenizer, max_vram_gb=args.max_vram_gb)
    bar = tqdm(desc="sampling", unit="step")
    done = {}

    def on_step(step, total, _preview):
        # first step: generate() has re-planned for the real size
        if bar.total is None and model.offload_plan is not None:
            bar.write(f"memory plan: {model.offload_plan.explanation}")
        bar.total = total
        bar.update(step - bar.n)

    def write(tmp: Path) -> None:
        # the video goes to a temporary file beside --out; write_beside renames it only when this returns
        writer = video_io.VideoWriter(tmp, fps, crf=args.crf)
        with writer:
            done["result"] = generate(model, _to_float([photo])[0], positive, negative, settings, callback=on_step,
                                      on_frames=lambda start, frames: writer.write(frames))
        done["frames"] = writer.frames_written

    try:
        write_beside(out, write, replace=args.overwrite)
    except FileExistsError as err:
        raise CLIError(f"--out {out} was created by something else during the run and was left as it is; the new "
                       "video was discarded; choose another --out (or pass --overwrite)") from err
    finally:
        bar.close()
    result = done["result"]
    for note in result.notices:
        log.warning(note)
    log.info("wrote %d frames (%dx%d, %g fps) to %s", done["frames"], result.width, result.height, fps, out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:      # --help (0) or a bad option (2, its one-line error already printed)
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        run(args)
    except KeyboardInterrupt:
        log.error("interrupted; no video written")
        return 130
    except (CLIError, FileNotFoundError, ValueError, torch.OutOfMemoryError) as err:
        log.error("error: %s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
