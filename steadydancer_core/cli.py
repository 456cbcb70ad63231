"""Headless SteadyDancer: photo + driving video (or pose frames) + prompt + model files -> mp4, without ComfyUI.

    python -m steadydancer_core.cli --photo me.png --video dance.mp4 --prompt "a person dancing" \\
        --dit Wan21_SteadyDancer_fp8_e4m3fn_scaled_KJ.safetensors --vae wan_2.1_vae.safetensors \\
        --t5 umt5_xxl_fp8_e4m3fn_scaled.safetensors --clip clip_vision_h.safetensors \\
        --detector yolox_l.onnx --pose-model dw-ll_ucoco_384.onnx --out out.mp4

``--pose-dir D`` replaces ``--video`` (and the pose models) with already aligned pose frames: ``D/positive/*``
and ``D/negative/*`` images (the official preprocessing output), or images directly in ``D``. The video is written
segment by segment while generating, so memory does not grow with its length.

Every option that has a node widget is named after it in --kebab-case (``pose_cfg_start`` -> ``--pose-cfg-start``;
AlignPose's ``augment_seed`` -> ``--augment-seed``) and has the widget's default, so a run without options matches
the bundled workflows' settings.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

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

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
log = logging.getLogger("steadydancer")


class CLIError(ValueError):
    """A problem with the command line's inputs; the message says what to change."""


def _pose_package():
    try:
        from .. import pose  # type: ignore[no-redef]  (inside the node pack)
    except (ImportError, ValueError):
        import pose  # the repository root is on sys.path (python -m steadydancer_core.cli)
    return pose


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
    p = argparse.ArgumentParser(prog="python -m steadydancer_core.cli", description=(
        "SteadyDancer: animate a photo with the motion of a driving video (first frame = the photo)."))
    io = p.add_argument_group("inputs and output")
    io.add_argument("--photo", required=True, help="the photo to animate (png/jpg)")
    src = io.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", help="driving dance video (mp4/webm/mov/gif)")
    src.add_argument("--pose-dir", help="aligned pose frames: DIR/positive/* and DIR/negative/* (or images in DIR)")
    io.add_argument("--out", required=True, help="output mp4 (H.264)")
    io.add_argument("--fps", type=float, default=None,
                    help="output frame rate (default: the pose frame rate, i.e. --target-fps, or the driving "
                         f"video's own rate when that is 0; {WAN_FPS:g} with --pose-dir)")
    io.add_argument("--crf", type=int, default=video_io.DEFAULT_CRF, help="x264 quality, lower = better")
    m = p.add_argument_group("model files and loading")
    m.add_argument("--dit", required=True, help="SteadyDancer DiT (.safetensors / .gguf / official folder)")
    m.add_argument("--vae", required=True, help="Wan 2.1 VAE")
    m.add_argument("--t5", required=True, help="umT5-XXL text encoder")
    m.add_argument("--clip", required=True, help="CLIP ViT-H vision encoder")
    m.add_argument("--tokenizer", default=None, help="umT5 tokenizer when the T5 file carries none")
    m.add_argument("--lora", action="append", default=[], metavar="PATH[:STRENGTH]", help="LoRA (repeatable)")
    m.add_argument("--precision", choices=tuple(PRECISIONS), default=LOADER.precision)
    m.add_argument("--attention", choices=ATTENTION_BACKENDS, default=LOADER.attention,
                   help="sdpa works everywhere; the others need their package")
    m.add_argument("--offload", choices=OFFLOAD_MODES, default=LOADER.offload,
                   help="auto: plan from the free VRAM; all_resident: every DiT block on the GPU; block_swap: "
                        "stream --blocks-to-swap blocks from CPU memory")
    m.add_argument("--blocks-to-swap", type=int, default=LOADER.blocks_to_swap, help="used by --offload block_swap")
    m.add_argument("--max-vram-gb", type=_vram, default=LOADER.max_vram_gb,
                   help="use at most this much GPU memory (GB; 0 = the free VRAM)")
    e = p.add_argument_group("poses (with --video)")
    e.add_argument("--detector", help=f"YOLOX person detector ONNX (e.g. {POSE.detector})")
    e.add_argument("--pose-model", help=f"DWPose ONNX (e.g. {POSE.pose_model})")
    e.add_argument("--person", choices=pose.PERSON_MODES, default=POSE.person, help="who drives the motion")
    e.add_argument("--no-person", choices=pose.MISSING_MODES, default=POSE.no_person,
                   help="frames without a person: hold the nearest earlier pose, or leave the frame empty")
    e.add_argument("--max-frames", type=int, default=POSE.max_frames,
                   help="use at most this many driving frames (0 = all)")
    e.add_argument("--target-fps", type=float, default=POSE.target_fps,
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
    g.add_argument("--steps", type=int, default=SAMPLER.steps)
    g.add_argument("--solver", choices=SOLVERS, default=SAMPLER.solver)
    g.add_argument("--shift", type=_shift, default=SAMPLER.shift,
                   help="schedule shift, or auto: the official CLI's rule (3.0 at --max-area 399360, else 5.0)")
    g.add_argument("--text-cfg", type=float, default=SAMPLER.text_cfg, help="text guidance (1 = off)")
    g.add_argument("--pose-cfg", type=float, default=SAMPLER.pose_cfg, help="pose guidance (0 = off)")
    g.add_argument("--pose-cfg-start", type=float, default=SAMPLER.pose_cfg_start,
                   help="pose guidance starts at this fraction of the steps")
    g.add_argument("--pose-cfg-end", type=float, default=SAMPLER.pose_cfg_end,
                   help="pose guidance ends at this fraction of the steps")
    g.add_argument("--max-area", type=int, default=SAMPLER.max_area, help="output pixels (aspect of the photo)")
    g.add_argument("--length", type=int, default=SAMPLER.length, help="frames to generate (0 = all pose frames)")
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


def poses_from_video(args, photo: np.ndarray, progress) -> tuple[np.ndarray, object, object, float, list]:
    """Extract and align the driving poses -> (resized photo, positive, negative, pose fps, notices).

    positive / negative are pose frame sources (``pose.pose_sources``): only the aligned keypoints are held, and
    ``generate`` renders each segment's frames when it needs them (resized to the photo there)."""
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
    positive, negative = pose.pose_sources(aligned, args.augment_seed, output_hw=out_hw)
    return resized, positive, negative, float(target_fps or info.fps or WAN_FPS), notices


def _loras(specs: Sequence[str]) -> list:
    out = []
    for spec in specs:
        path, _, strength = spec.rpartition(":") if ":" in Path(spec).name else (spec, "", "")
        try:
            out.append((path, float(strength) if strength else 1.0))
        except ValueError as err:
            raise CLIError(f"--lora {spec!r}: strength after ':' must be a number, e.g. path.safetensors:0.8") from err
    return out


def run(args) -> Path:
    """Generate the video described by parsed ``args``; returns the output path."""
    from tqdm import tqdm


    photo = read_image(args.photo)
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
    out = Path(args.out)
    writer = video_io.VideoWriter(out, fps, crf=args.crf)
    bar = tqdm(desc="sampling", unit="step")

    def on_step(step, total, _preview):
        # first step: generate() has re-planned for the real size
        if bar.total is None and model.offload_plan is not None:
            bar.write(f"memory plan: {model.offload_plan.explanation}")
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
    log.info("wrote %d frames (%dx%d, %g fps) to %s", writer.frames_written, result.width, result.height, fps, out)
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
