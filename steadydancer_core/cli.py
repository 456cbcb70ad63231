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

import importlib.util
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from . import (
    POSE,
    SAMPLER_OPTIONS,
    WAN_FPS,
    format_seconds,
    generate,
    generation_settings,
    load_model,
    video_io,
)
from . import image_io
from .cli_options import ATTENTION_PACKAGES, CLIError, build_parser, pose_package
from .models_folder import resolve_models
from .safe_write import write_beside

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
OUT_SUFFIX = ".mp4"
BAR_SCALE = 1000                   # the generation bar counts thousandths of the job's weighted work
BAR_FORMAT = "{percentage:3.0f}%|{bar}| {desc}"

log = logging.getLogger("steadydancer")


def read_image(path: str | Path, background: tuple | None = None) -> np.ndarray:
    """uint8 RGB [H, W, 3] of an image file, read by ``image_io.read_image`` (header checked first, decoded once,
    shrunk to the largest size the pipeline uses). ``background`` (r, g, b): transparency is composited on it, with
    one log line saying so; None keeps the colour channels as stored."""
    try:
        image = image_io.read_image(path, background)
    except image_io.ImageReadError as err:
        raise CLIError(str(err)) from None
    if image.composited:
        log.info("%s has transparency: composited on background #%02X%02X%02X (choose with --background)",
                 Path(path).name, *background)
    if image.shrunk:
        log.info("%s is %dx%d: read at %dx%d, the most the pipeline uses", Path(path).name, *image.source_hw[::-1],
                 *image.rgb.shape[1::-1])
    return image.rgb


def _to_float(images: Sequence[np.ndarray] | np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.stack(list(images)))).float().div_(255.0)


def _image_files(folder: Path) -> list:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


class ImageFilePoses:
    """Pose frames read from image files when ``generate`` asks for them: uint8 [n, H, W, 3] at the files' size
    (``generate`` resizes each frame by ``pose_resize``), so a long pose folder is never held in memory."""

    def __init__(self, files: Sequence[Path]):
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    def frames(self, start: int, stop: int) -> np.ndarray:
        return np.stack([read_image(f) for f in self.files[start:stop]])


def load_pose_dir(folder: str | Path) -> tuple[ImageFilePoses, ImageFilePoses | None]:
    """(positive, negative or None) pose frame sources over a pose folder's images (read when sampled)."""

    folder = Path(folder)
    if not folder.is_dir():
        raise CLIError(f"pose folder not found: {folder}")
    pos_dir = folder / "positive" if (folder / "positive").is_dir() else folder
    neg_dir = folder / "negative" if (folder / "negative").is_dir() else None
    positive = _image_files(pos_dir)
    if not positive:
        raise CLIError(f"no pose images ({', '.join(IMAGE_SUFFIXES)}) in {pos_dir}")
    negative = _image_files(neg_dir) if neg_dir is not None else []
    if neg_dir is not None and len(negative) < len(positive):
        raise CLIError(f"{neg_dir} has {len(negative)} images but {pos_dir} has {len(positive)}; they must match")
    return ImageFilePoses(positive), (ImageFilePoses(negative[:len(positive)]) if negative else None)


def poses_from_video(args, photo: np.ndarray, progress) -> tuple[np.ndarray, object, object, float, list]:
    """Extract and align the driving poses -> (resized photo, positive, negative, pose fps, notices).

    positive / negative are pose frame sources (``pose.pose_sources``): only the aligned keypoints are held, and
    ``generate`` renders each segment's frames when it needs them (resized there by ``--pose-resize``)."""
    pose = pose_package()
    if not args.detector or not args.pose_model:
        raise CLIError(f"--video needs --detector ({POSE.detector}) and --pose-model ({POSE.pose_model}); or pass "
                       "--pose-dir with already aligned pose frames")

    notices = []
    info = video_io.probe_video(args.video)
    target_fps = args.target_fps or None
    if target_fps is not None and info.fps and abs(info.fps - target_fps) > 1e-3:
        notices.append(f"driving video {info.fps:g} fps resampled to {target_fps:g} fps")
    frames = video_io.iter_pose_frames(args.video, max_frames=args.max_frames or None, target_fps=target_fps)
    models = pose.load_models(args.detector, args.pose_model, person=args.person)  # one set of sessions for both
    reference, resized = pose.extract_reference(photo, args.detector, args.pose_model, person=args.person)
    sequence = pose.extract(frames, args.detector, args.pose_model, person=args.person, on_missing=args.no_person,
                            progress=progress)
    del models
    if sequence.missing_frames:
        how = "held the nearest pose" if args.no_person == "hold" else "left empty"
        notices.append(f"no person in {len(sequence.missing_frames)} driving frames ({how})")
    aligned = pose.align(reference, sequence, scale_fallback=args.scale_fallback)
    out_hw = None if args.canvas == "2x" else tuple(v // 2 for v in aligned.canvas_hw)
    positive, negative = pose.pose_sources(aligned, args.augment_seed, output_hw=out_hw)
    return resized, positive, negative, float(target_fps or info.fps or WAN_FPS), notices


def _expected_frames(args) -> int | None:
    """About how many driving frames the pose phase reads (for its bar's ETA); None when the file does not say."""
    info = video_io.probe_video(args.video)
    if not info.frames:
        return None
    frames = info.frames
    if args.target_fps and info.fps:
        frames = max(1, math.floor(frames * args.target_fps / info.fps))
    return min(frames, args.max_frames) if args.max_frames else frames


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
    started = time.monotonic()
    photo = read_image(args.photo, background=args.background)
    notices = []
    if args.video:
        with tqdm(desc="poses", unit="frame", total=_expected_frames(args)) as bar:
            photo, positive, negative, pose_fps, notes = poses_from_video(
                args, photo, lambda done: bar.update(done - bar.n))
        notices += notes
    else:
        positive, negative = load_pose_dir(args.pose_dir)
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
                       tokenizer_path=args.tokenizer, max_vram_gb=args.max_vram_gb, fp8_matmul=args.fp8_matmul,
                       compile=args.compile)
    if model.fp8_matmul_report:
        log.info(model.fp8_matmul_report)
    bar = tqdm(desc="generation", total=BAR_SCALE, bar_format=BAR_FORMAT)
    done = {}
    shown = {"phase": None, "plan": False}

    def on_progress(p):
        # the phases are printed as they start; the bar shows the weighted fraction with a measured ETA
        if (p.phase, p.segment) != shown["phase"]:
            shown["phase"] = (p.phase, p.segment)
            bar.write(p.title + (f" ({p.units} steps)" if p.phase == "sample" else ""))
        if p.phase == "sample" and not shown["plan"] and model.offload_plan is not None:
            shown["plan"] = True          # generate() has re-planned for the real size by now
            bar.write(f"memory plan: {model.offload_plan.explanation}")
        bar.set_description_str(f"{p.label}, elapsed {format_seconds(p.elapsed_s)}, ETA {format_seconds(p.eta_s)}",
                                refresh=False)
        bar.n = int(round(p.fraction * BAR_SCALE))
        bar.refresh()

    def write(tmp: Path) -> None:
        # the video goes to a temporary file beside --out; write_beside renames it only when this returns
        writer = video_io.VideoWriter(tmp, fps, crf=args.crf)
        with writer:
            done["result"] = generate(model, _to_float([photo])[0], positive, negative, settings,
                                      progress=on_progress, on_frames=lambda start, frames: writer.write(frames))
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
    log.info("done in %s", format_seconds(time.monotonic() - started))
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
