"""Headless SteadyDancer: photo + driving video (or pose frames) + prompt + model files -> mp4, without ComfyUI.

    python -m steadydancer_core.cli --photo me.png --video dance.mp4 --prompt "a person dancing" \\
        --dit Wan21_SteadyDancer_fp8_e4m3fn_scaled_KJ.safetensors --vae wan_2.1_vae.safetensors \\
        --t5 umt5_xxl_fp8_e4m3fn_scaled.safetensors --clip-vision clip_vision_h.safetensors \\
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

import dataclasses
import importlib.util
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from . import (
    LORA_STRENGTH,
    AttentionBackendError,
    NonFiniteLatentError,
    RankFailedError,
    GenerationSettings,
    OptionError,
    LoaderSettings,
    ModelFiles,
    WAN_FPS,
    check_model_files,
    format_seconds,
    generate,
    load_model,
    parse_background,
    preferred_file_name,
    report_paths,
    start_gap,
    video_io,
)
from . import cli_parallel, image_io
from .driving import expected_frames, extract_driving_poses
from .cli_report import report_on
from .cli_options import ATTENTION_PACKAGES, CLIError, build_parser, flagged, option_values
from .models_folder import resolve_models
from .option_tables import ALIGN, EXTRACT, LOADER, SAMPLER, VAE_TILING
from .pose_package import pose
from .safe_write import NotWritableError, check_writable, write_beside

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
        images = [read_image(f) for f in self.files[start:stop]]
        first = images[0].shape if images else None
        for path, image in zip(self.files[start:stop], images):
            if image.shape != first:
                raise CLIError(f"{path} is {image.shape[1]}x{image.shape[0]} but {self.files[start].name} is "
                               f"{first[1]}x{first[0]}; every pose frame of --pose-dir must have the same size")
        return np.stack(images)


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


def poses_from_video(args, photo: np.ndarray, progress):
    """Extract the driving poses (``extract_driving_poses``) and prepare them for the photo (``pose.prepare``) ->
    (``pose.PreparedPoses``, ``DrivingPoses``). ``prepared.sources()`` gives the pose frames rendered on demand:
    only the aligned keypoints are held, and ``generate`` renders each segment's frames when it needs them."""
    driving = extract_driving_poses(args.video, args.detector, args.pose_model, progress=progress,
                                    **option_values(args, EXTRACT))
    prepared = pose.prepare(photo, driving.sequence, driving.models, **option_values(args, ALIGN))
    return prepared, driving


def _loras(specs: Sequence[str]) -> list:
    """``--lora PATH[:STRENGTH]`` values -> [(path, strength)] (strength 1 when not given)."""
    out = []
    for spec in specs:
        path, _, strength = spec.rpartition(":") if ":" in Path(spec).name else (spec, "", "")
        try:
            value = LORA_STRENGTH.check(strength) if strength else LORA_STRENGTH.default
        except OptionError as err:
            raise CLIError(f"--lora {spec!r}: the strength after ':' {str(err).split(' ', 1)[1]}; e.g. "
                           "path.safetensors:0.8") from None
        out.append((path, value))
    return out


def _inputs(args) -> list:
    """(option, path, kind) of every input the run reads; kind: file, dir or any."""
    items = [("--photo", args.photo, "file")]
    items += [("--video", args.video, "file")] if args.video else [("--pose-dir", args.pose_dir, "dir")]
    items += [("--dit", args.dit, "any"), ("--vae", args.vae, "file"), ("--t5", args.t5, "file"),
              ("--clip-vision", args.clip_vision, "file")]
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
    if args.report and not args.overwrite:
        for path in report_paths(out):
            if os.path.lexists(path):
                raise CLIError(f"--report: {path} exists; pass --overwrite to replace it or choose another --out")
    try:
        check_writable(out)                  # before any model loads: the folder, the name, the free space
    except NotWritableError as err:
        raise CLIError(f"--out {err}") from None
    return out


def check_args(args) -> tuple[Path, GenerationSettings]:
    """Every check that needs no model loaded: model paths (from --models) and what each file holds, inputs, output,
    sampler options, attention backend. Returns the output path and the generation settings."""
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
        raise CLIError(f"--video needs --detector ({preferred_file_name('detector')}) and --pose-model "
                       f"({preferred_file_name('pose_model')}) (or "
                       "--models DIR holding dwpose/); or pass --pose-dir with already aligned pose frames")
    inputs = _inputs(args)
    check(inputs)
    out = _check_out(args, inputs)
    if args.attention in ATTENTION_PACKAGES:
        module, package = ATTENTION_PACKAGES[args.attention]
        if importlib.util.find_spec(module) is None:
            raise CLIError(f"--attention {args.attention} needs the {package} package (pip install {package}); "
                           "or use --attention sdpa")
    if args.video and video_io.is_still_image(args.video):
        raise CLIError(f"--video {args.video} is a still image, not a video; give the driving dance video (mp4, "
                       "mov, webm, mkv or gif), or use the image as --photo")
    settings = generation_settings(args)
    check_model_files(model_files(args))              # each file holds what its option names, before any pose work
    return out, settings


def generation_settings(args) -> GenerationSettings:
    """``GenerationSettings`` of the parsed options; a bad combination is a ``CLIError`` naming the options."""
    try:
        return GenerationSettings(**option_values(args, SAMPLER), **option_values(args, VAE_TILING))
    except ValueError as err:
        raise CLIError(flagged(str(err))) from None


def model_files(args) -> ModelFiles:
    return ModelFiles(dit=args.dit, vae=args.vae, t5=args.t5, clip_vision=args.clip_vision,
                      tokenizer=args.tokenizer, loras=tuple(_loras(args.lora)))




def run(args) -> Path | None:
    """Generate the video described by parsed ``args``; returns the output path (None on the ranks other than 0 of
    a torchrun start: see ``cli_parallel``)."""
    launch = cli_parallel.start(args)
    if launch is None:
        return _run(args)
    with launch:
        return _run(args, launch) if launch.leads else launch.follow()


def _run(args, launch=None) -> Path:
    from tqdm import tqdm

    out, settings = check_args(args)
    started = time.monotonic()
    photo = read_image(args.photo, background=parse_background(args.background))
    notices, prepared, pose_models = [], None, None
    if args.video:
        total = expected_frames(args.video, args.max_frames, args.target_fps)[1]
        with tqdm(desc="poses", unit="frame", total=total) as bar:
            prepared, driving = poses_from_video(args, photo, lambda done: bar.update(done - bar.n))
        photo, (positive, negative), pose_fps = prepared.photo, prepared.sources(), driving.fps
        pose_models = driving.models
        notices += driving.notes + prepared.notes
        log.info(start_gap(prepared.reference, prepared.aligned.frames[0]).message)
    else:
        positive, negative = load_pose_dir(args.pose_dir)
        pose_fps = WAN_FPS                  # a pose folder has no frame rate: Wan's (--fps sets another)
    fps = args.fps or pose_fps
    if negative is None:
        negative = positive
        if settings.pose_cfg != 0.0:
            # the pose term is pose_cfg * (cond - uncond_pose): 0 switches it off and saves a pass
            notices.append(f"no negative pose frames in {args.pose_dir}: --pose-cfg {settings.pose_cfg:g} -> 0 (off)")
            settings = dataclasses.replace(settings, pose_cfg=0.0)
    for note in notices:
        log.warning(note)
    files, loader, photo_in = model_files(args), LoaderSettings(**option_values(args, LOADER)), _to_float([photo])[0]
    if launch is not None:              # what the other ranks' generate needs; they load their DiT meanwhile
        launch.share(cli_parallel.JobInputs(files, loader, settings, photo_in, len(positive), len(negative)))
    log.info("loading models")
    model = launch.load(files, loader) if launch is not None else load_model(files, loader)
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
        if p.phase == "sample" and not shown["plan"] and p.plan is not None:
            shown["plan"] = True          # the job's plan, made for the real size
            bar.write(f"memory plan: {p.plan.explanation}")
        bar.set_description_str(f"{p.label}, elapsed {format_seconds(p.elapsed_s)}, ETA {format_seconds(p.eta_s)}",
                                refresh=False)
        bar.n = int(round(p.fraction * BAR_SCALE))
        bar.refresh()

    def write(tmp: Path) -> None:
        # the video goes to a temporary file beside --out; write_beside renames it only when this returns
        writer = video_io.VideoWriter(tmp, fps, crf=args.crf)
        with writer:
            done["result"] = generate(model, photo_in, positive, negative, settings,
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
    if args.report:
        with tqdm(desc="quality report", unit="frame", total=done["frames"]) as bar:
            summary = report_on(out, model, result, fps, args.identity_every, args.overwrite, prepared, pose_models,
                                progress=lambda n, total: bar.update(n - bar.n))
        log.info("quality: %s", summary)
    return out


class Terminated(KeyboardInterrupt):
    """SIGTERM: stops the run like Ctrl-C, so the temporary video beside --out is removed the same way."""


def _terminate(signum, frame):
    raise Terminated()


# what a user can cause (a bad input, a full disk, an unstable setting) ends as one line, never a traceback
USER_ERRORS = (CLIError, ValueError, OSError, torch.OutOfMemoryError, NonFiniteLatentError, AttentionBackendError,
               RankFailedError)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:      # --help (0) or a bad option (2, its one-line error already printed)
        return exit_.code if isinstance(exit_.code, int) else 2
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        run(args)
    except KeyboardInterrupt as stop:
        log.error("%s; no video written", "terminated" if isinstance(stop, Terminated) else "interrupted")
        return 143 if isinstance(stop, Terminated) else 130
    except USER_ERRORS as err:
        log.error("error: %s", " ".join(str(err).split()) or type(err).__name__)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
