"""How close frame 0 is to the photo in each ``first_frame`` mode, on the tiny random-weight kit.

For ``exact``, ``latent`` and ``model`` this runs the whole job of the Python API on the tiny kit (written into a
temporary folder) on defaults, with only the steps and the area lowered, and measures frame 0 against the photo (the
quality report's ``first_frame_psnr``: the photo resized to the video's size, PSNR in dB):

  * decoded: the frames ``generate`` hands to ``on_frames``, before any file is written;
  * mp4: frame 0 read back from the H.264 file ``VideoWriter`` wrote (the default crf).

``exact`` puts the photo itself in frame 0, so only the video file's compression remains; ``latent`` is the photo's
VAE round trip, which on random weights is far from the photo; ``model`` lets the model re-make frame 0. With the
real weights ``latent`` and ``model`` come much closer; ``exact`` does not depend on the weights.

Writes benchmarks/results/first_frame.json.

    python benchmarks/bench_first_frame.py
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def measure(root: Path, steps: int, max_area: int) -> dict:
    import cv2
    import torch

    import pose
    import steadydancer_core as sd
    from steadydancer_core import tiny_kit

    kit = tiny_kit.write_kit(root / "models", root / "input")
    models = kit.models_dir
    photo = cv2.cvtColor(cv2.imread(str(kit.photo)), cv2.COLOR_BGR2RGB)
    driving = sd.extract_driving_poses(kit.video, models / tiny_kit.kit_path("detector"),
                                       models / tiny_kit.kit_path("pose_model"))
    prepared = pose.prepare(photo, driving.sequence, driving.models)
    model = sd.load_model(sd.ModelFiles(*(models / tiny_kit.kit_path(k) for k in
                                          ("dit_fp8", "vae", "t5_fp8", "clip_vision"))))
    photo_t = torch.from_numpy(prepared.photo).float() / 255
    out = {}
    for mode in sd.FIRST_FRAME_MODES:
        positive, negative = prepared.sources()
        settings = sd.GenerationSettings(steps=steps, max_area=max_area, first_frame=mode)
        frames, path = [], root / f"{mode}.mp4"
        with sd.VideoWriter(path, fps=driving.fps) as writer:
            def keep(start, chunk):
                frames.append(chunk)
                writer.write(chunk)
            result = sd.generate(model, photo_t, positive, negative, settings, on_frames=keep)
        decoded = sd.quality_report(photo_t, torch.cat(frames)[:1]).value("first_frame_psnr")
        written = sd.quality_report(photo_t, str(path)).value("first_frame_psnr")
        out[mode] = {"decoded_psnr_db": None if decoded == float("inf") else round(decoded, 2),
                     "mp4_psnr_db": round(written, 2)}
    out["size"] = [result.height, result.width]
    out["frames"] = result.num_frames
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--max-area", type=int, default=192 * 320, help="the kit's photo is 192 x 320")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "first_frame.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-first-frame-") as tmp:
        figures = measure(Path(tmp), args.steps, args.max_area)
    report = {"steps": args.steps, "max_area": args.max_area, **figures,
              "note": "decoded_psnr_db null = identical to the photo (infinite PSNR)",
              "machine": platform.processor() or platform.machine(), "python": platform.python_version()}
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
