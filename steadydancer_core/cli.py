"""Headless SteadyDancer: photo + driving video (or pose frames) + prompt + model files -> mp4, without ComfyUI.

    python -m steadydancer_core.cli --photo me.png --video dance.mp4 --prompt "a person dancing" \\
        --dit Wan21_SteadyDancer_fp8_e4m3fn_scaled_KJ.safetensors --vae wan_2.1_vae.safetensors \\
        --t5 umt5_xxl_fp8_e4m3fn_scaled.safetensors --clip clip_vision_h.safetensors \\
        --detector yolox_l.onnx --estimator dw-ll_ucoco_384.onnx --out out.mp4

``--pose-dir D`` replaces ``--video`` (and the pose models) with already aligned pose frames: ``D/positive/*``
and ``D/negative/*`` images (the official preprocessing output), or images directly in ``D``. The video is written
segment by segment while generating, so memory does not grow with its length.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import video_io
from .sampling.defaults import (
    DEFAULT_CONDITION_CFG_END,
    DEFAULT_CONDITION_CFG_START,
    DEFAULT_CONDITION_GUIDE_SCALE,
    DEFAULT_FRAMES_PER_SEGMENT,
    DEFAULT_GUIDE_SCALE,
    DEFAULT_MAX_AREA,
    DEFAULT_SEGMENT_OVERLAP,
    DEFAULT_SHIFT,
    DEFAULT_SOLVER,
    DEFAULT_STEPS,
    FIRST_FRAME_MODES,
    SOLVERS,
    resolve_shift,
)
from .sampling.noise import DEFAULT_NOISE_SOURCE, NOISE_SOURCES

DEFAULT_FPS = 16.0                 # Wan 2.1 was trained on 16 fps clips
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
PERSON_MODES = ("highest", "largest", "all")
log = logging.getLogger("steadydancer")


class CLIError(ValueError):
    """A problem with the command line's inputs; the message says what to change."""


def _pose_package():
    try:
        from .. import pose  # type: ignore[no-redef]  (inside the node pack)
    except (ImportError, ValueError):
        import pose  # the repository root is on sys.path (python -m steadydancer_core.cli)
    return pose


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m steadydancer_core.cli", description=(
        "SteadyDancer: animate a photo with the motion of a driving video (first frame = the photo)."))
    io = p.add_argument_group("inputs and output")
    io.add_argument("--photo", required=True, help="the photo to animate (png/jpg)")
    src = io.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", help="driving dance video (mp4/webm/mov/gif)")
    src.add_argument("--pose-dir", help="aligned pose frames: DIR/positive/* and DIR/negative/* (or images in DIR)")
    io.add_argument("--out", required=True, help="output mp4 (H.264)")
    io.add_argument("--fps", type=float, default=DEFAULT_FPS, help="output frame rate (default %(default)g)")
    io.add_argument("--driving-fps", type=float, default=None,
                    help="resample the driving video to this rate before extracting poses (default: --fps; "
                         "0 keeps every frame)")
    io.add_argument("--max-frames", type=int, default=0, help="use at most this many driving frames (0 = all)")
    io.add_argument("--crf", type=int, default=video_io.DEFAULT_CRF, help="x264 quality, lower = better")
    m = p.add_argument_group("model files")
    m.add_argument("--dit", required=True, help="SteadyDancer DiT (.safetensors / .gguf / official folder)")
    m.add_argument("--vae", required=True, help="Wan 2.1 VAE")
    m.add_argument("--t5", required=True, help="umT5-XXL text encoder")
    m.add_argument("--clip", required=True, help="CLIP ViT-H vision encoder")
    m.add_argument("--tokenizer", default=None, help="umT5 tokenizer when the T5 file carries none")
    m.add_argument("--detector", help="YOLOX person detector ONNX (needed with --video)")
    m.add_argument("--estimator", help="DWPose ONNX (needed with --video)")
    m.add_argument("--lora", action="append", default=[], metavar="PATH[:STRENGTH]", help="LoRA (repeatable)")
    m.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default="bf16")
    m.add_argument("--attention", default="sdpa", help="attention backend: sdpa | flash | sage")
    m.add_argument("--offload", default="auto", help="DiT blocks to swap: auto | none | a number")
    m.add_argument("--max-vram-gb", type=float, default=None, help="use at most this much GPU memory (GiB)")
    g = p.add_argument_group("generation")
    g.add_argument("--prompt", default="", help="what the video shows")
    g.add_argument("--negative-prompt", default="", help="default: Wan's I2V negative prompt")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    g.add_argument("--solver", choices=SOLVERS, default=DEFAULT_SOLVER)
    g.add_argument("--shift", type=_shift, default=DEFAULT_SHIFT,
                   help="schedule shift, or auto: the official CLI's rule (3.0 at --max-area 399360, else 5.0)")
    g.add_argument("--text-cfg", type=float, default=DEFAULT_GUIDE_SCALE)
    g.add_argument("--pose-cfg", type=float, default=DEFAULT_CONDITION_GUIDE_SCALE)
    g.add_argument("--pose-cfg-window", type=float, nargs=2, metavar=("START", "END"),
                   default=(DEFAULT_CONDITION_CFG_START, DEFAULT_CONDITION_CFG_END))
    g.add_argument("--max-area", type=int, default=DEFAULT_MAX_AREA, help="output pixels (aspect of the photo)")
    g.add_argument("--length", type=int, default=0, help="frames to generate (0 = all pose frames)")
    g.add_argument("--first-frame", choices=FIRST_FRAME_MODES, default="model")
    g.add_argument("--segment-frames", type=int, default=DEFAULT_FRAMES_PER_SEGMENT)
    g.add_argument("--segment-overlap", type=int, default=DEFAULT_SEGMENT_OVERLAP)
    g.add_argument("--color-correction", type=float, default=1.0)
    g.add_argument("--person", choices=PERSON_MODES, default="highest", help="who drives the motion")
    g.add_argument("--augment-seed", type=int, default=None, help="negative-pose augmentation seed (default --seed)")
    g.add_argument("--noise", choices=NOISE_SOURCES, default=DEFAULT_NOISE_SOURCE,
                   help="cpu: the same video for a seed on every machine; official: drawn on the execution device "
                        "as the official code does (on CUDA: the official CLI's noise for the seed)")
    return p


def _shift(value: str):
    """--shift: a number or "auto" (kept as "auto"; GenerationSettings resolves it from the max area)."""
    if value.strip().lower() == "auto":
        return "auto"
    try:
        return resolve_shift(value, 0)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def read_image(path: str | Path) -> np.ndarray:
    """uint8 RGB [H, W, 3] of an image file (any path, unicode included)."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise CLIError(f"image not found: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise CLIError(f"{path} is not a readable image; use a png or jpg file")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _to_float(images: Sequence[np.ndarray] | np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.stack(list(images)))).float().div_(255.0)


def _image_files(folder: Path) -> list:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def load_pose_dir(folder: str | Path, size_hw: tuple) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(positive, negative or None) frames [T, H, W, 3] in [0, 1] from a pose folder, resized to ``size_hw``."""
    from .sampling.conditioning import resize_like_pil

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


def poses_from_video(args, photo: np.ndarray, progress) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, list]:
    """Extract, align and render the driving poses -> (resized photo, positive, negative, notices)."""
    pose = _pose_package()
    if not args.detector or not args.estimator:
        raise CLIError("--video needs --detector (yolox_l.onnx) and --estimator (dw-ll_ucoco_384.onnx); or pass "
                       "--pose-dir with already aligned pose frames")
    from .sampling.conditioning import resize_like_pil

    notices = []
    info = video_io.probe_video(args.video)
    target_fps = args.fps if args.driving_fps is None else (args.driving_fps or None)
    if target_fps is not None and info.fps and abs(info.fps - target_fps) > 1e-3:
        notices.append(f"driving video {info.fps:g} fps resampled to {target_fps:g} fps")
    frames = (f for chunk in video_io.iter_video_frames(args.video, max_frames=args.max_frames or None,
                                                       target_fps=target_fps)
              for f in (chunk.mul(255).round().to(torch.uint8).numpy()))
    reference, resized = pose.extract_reference(photo, args.detector, args.estimator, person=args.person)
    sequence = pose.extract(frames, args.detector, args.estimator, person=args.person, on_missing="hold",
                            progress=progress)
    if sequence.missing_frames:
        notices.append(f"no person in {len(sequence.missing_frames)} driving frames (held the nearest pose)")
    aligned = pose.align(reference, sequence)
    seed = args.seed if args.augment_seed is None else args.augment_seed
    size_hw = tuple(resized.shape[:2])
    positive, negative = [], []
    for frame, neg in zip(aligned, pose.augment_frames(aligned, seed)):
        for out, f in ((positive, frame), (negative, neg)):
            out.append(resize_like_pil(_to_float([pose.render(f, aligned.canvas_hw)]), size_hw))
    return resized, torch.cat(positive), torch.cat(negative), notices


def _loras(specs: Sequence[str]) -> list:
    out = []
    for spec in specs:
        path, _, strength = spec.rpartition(":") if ":" in Path(spec).name else (spec, "", "")
        try:
            out.append((path, float(strength) if strength else 1.0))
        except ValueError as err:
            raise CLIError(f"--lora {spec!r}: strength after ':' must be a number, e.g. path.safetensors:0.8") from err
    return out


def _offload(value: str):
    if value in ("auto", "none"):
        return value
    try:
        return int(value)
    except ValueError as err:
        raise CLIError(f"--offload must be auto, none or a number of blocks, got {value!r}") from err


def run(args) -> Path:
    """Generate the video described by parsed ``args``; returns the output path."""
    from tqdm import tqdm

    from .runtime.bundle import load_model
    from .sampling.pipeline import GenerationSettings, generate

    photo = read_image(args.photo)
    notices = []
    if args.video:
        with tqdm(desc="poses", unit="frame") as bar:
            photo, positive, negative, notes = poses_from_video(args, photo, lambda done: bar.update(done - bar.n))
        notices += notes
    else:
        positive, negative = load_pose_dir(args.pose_dir, tuple(photo.shape[:2]))
    pose_cfg = args.pose_cfg
    if negative is None:
        negative = positive
        if pose_cfg != 0.0:
            # the pose term is pose_cfg * (cond - uncond_pose): 0 switches it off and saves a pass
            notices.append(f"no negative pose frames in {args.pose_dir}: pose CFG {pose_cfg:g} -> 0 (off)")
            pose_cfg = 0.0
    settings = GenerationSettings(
        prompt=args.prompt, negative_prompt=args.negative_prompt, seed=args.seed, steps=args.steps,
        solver=args.solver, shift=args.shift, text_cfg=args.text_cfg, pose_cfg=pose_cfg,
        pose_cfg_window=tuple(args.pose_cfg_window), max_area=args.max_area, length=args.length,
        first_frame=args.first_frame, segment_frames=args.segment_frames, segment_overlap=args.segment_overlap,
        color_correction=args.color_correction, noise=args.noise)
    for note in notices:
        log.warning(note)
    if args.max_vram_gb is not None and args.max_vram_gb <= 0:
        raise CLIError(f"--max-vram-gb must be positive, got {args.max_vram_gb}")
    log.info("loading models")
    model = load_model(args.dit, args.vae, args.t5, args.clip, precision=args.precision, attention=args.attention,
                       loras=_loras(args.lora), offload=_offload(args.offload), tokenizer_path=args.tokenizer,
                       max_vram_gb=args.max_vram_gb)
    out = Path(args.out)
    writer = video_io.VideoWriter(out, args.fps, crf=args.crf)
    bar = tqdm(desc="sampling", unit="step")

    def on_step(step, total, _preview):
        if bar.total is None:                   # first step: generate() has re-planned for the real size
            plan = getattr(model, "offload_plan", None)
            if plan is not None:
                bar.write(f"memory plan: {plan.explanation}")
        bar.total = total
        bar.update(step - bar.n)

    try:
        with writer:
            result = generate(model, _to_float([photo])[0], positive, negative, settings, callback=on_step,
                              on_frames=lambda start, frames: writer.write(frames))
    except BaseException:
        bar.close()
        out.unlink(missing_ok=True)          # never leave a truncated mp4 behind
        raise
    bar.close()
    for note in result.notices:
        log.warning(note)
    log.info("wrote %d frames (%dx%d, %g fps) to %s", writer.frames_written, result.width, result.height,
             args.fps, out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
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
