"""``python -m steadydancer_core.demo OUT.mp4``: the whole job on a machine with no model files and no ComfyUI.

It writes the tiny random-weight kit (real file formats and names) into a temporary folder of its own, then runs
the pipeline the nodes run on the kit's example photo and driving video: DWPose extraction, the official
alignment, rendering of the positive and augmented negative poses, SteadyDancer sampling with text and pose
guidance, and decoding. The mp4 is written beside OUT first and renamed when complete; an existing OUT is never
replaced. The temporary folder is removed afterwards.

Frame 0 is the example photo (``first_frame`` exact, the default); the weights are random, so the later frames are noise,
not a dancer: the demo proves the installation works end to end. With real models, use ``python -m steadydancer_core.cli``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

DEMO_STEPS = 4
DEMO_MAX_AREA = 192 * 320          # the kit's photo is 192 x 320: kept at its size
DEMO_PROMPT = "a person dancing"


def _to_float(frames) -> torch.Tensor:
    """uint8 [H, W, 3] frames -> float32 [T, H, W, 3] in [0, 1]."""
    return torch.from_numpy(np.stack(list(frames))).float() / 255


def run(out: Path, steps: int = DEMO_STEPS) -> dict:
    """Build the kit, animate its photo, write ``out``. Returns what was done (paths, sizes, seconds)."""
    from . import (
        GenerationSettings,
        LoaderSettings,
        ModelFiles,
        VideoWriter,
        extract_driving_poses,
        generate,
        iter_decoded,
        load_model,
    )
    from .pose_package import pose
    from .safe_write import write_beside
    from .tiny_kit import kit_path, write_kit

    out = Path(out)
    if out.exists():
        raise SystemExit(f"error: {out} exists; give the demo a new file name (it never replaces a file)")
    if out.suffix.lower() != ".mp4":
        raise SystemExit(f"error: {out} must end in .mp4")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="steadydancer-demo-") as tmp:
        kit = write_kit(Path(tmp) / "models", Path(tmp) / "input")
        models = kit.models_dir
        det, est = models / kit_path("detector"), models / kit_path("pose_model")
        photo = cv2.cvtColor(cv2.imread(str(kit.photo)), cv2.COLOR_BGR2RGB)
        driving = extract_driving_poses(kit.video, det, est)            # ExtractPose's defaults (16 fps)
        prepared = pose.prepare(photo, driving.sequence, driving.models)   # AlignPose's defaults
        positive, negative = prepared.sources()
        files = ModelFiles(dit=models / kit_path("dit_fp8"), vae=models / kit_path("vae"),
                           t5=models / kit_path("t5_fp8"), clip_vision=models / kit_path("clip_vision"))
        model = load_model(files, LoaderSettings(precision="fp32"))
        settings = GenerationSettings(prompt=DEMO_PROMPT, steps=steps, max_area=DEMO_MAX_AREA)
        result = generate(model, _to_float([prepared.photo]), positive, negative, settings)

        def write(path: Path) -> None:
            with VideoWriter(path, fps=driving.fps) as writer:
                for _, frames in iter_decoded(model, result):
                    writer.write(frames)

        write_beside(out, write)
    return {"out": out, "fps": driving.fps, "frames": result.num_frames, "width": result.width, "height": result.height,
            "steps": steps, "seconds": time.perf_counter() - started, "photo": result.photo}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m steadydancer_core.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the mp4 to write (must not exist)")
    parser.add_argument("--steps", type=int, default=DEMO_STEPS, help=f"sampling steps (default {DEMO_STEPS})")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    done = run(Path(args.out), args.steps)
    print(f"wrote {done['out'].resolve()}: {done['frames']} frames at {done['width']}x{done['height']}, "
          f"{done['fps']:g} fps, {done['steps']} steps, in {done['seconds']:.1f} s. The tiny random-weight models "
          "animate the kit's example photo with its example driving video through the full pipeline (pose "
          "extraction, alignment, text + pose guidance, decoding). Frame 0 is the photo; the weights are random, so the "
          "later frames are noise, not a dancer.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
