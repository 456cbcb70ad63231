"""The quality report tried on a real driving video (the picture in ``docs/quality.md``).

There is no generated video to score here, so the driving video itself plays the result, its first frame plays
the photo, and its own poses (extracted by the given DWPose models) play the aligned driving poses:

  * ``itself``: the video against its own poses: what a perfect result reads;
  * ``shifted``: the video moved right and down (``--shift``, a fraction of the width) against the same poses: a
    result whose body is not where the driving pose puts it, and whose frame 0 is not the photo;
  * ``poses moved``: the video against its own poses moved by the same amount: the same mismatch seen from the
    poses' side.

Without ``--detector`` / ``--estimator`` the tiny kit's stand-in models are used: their keypoints do not depend on
the picture (a fixed figure in a fixed box), so pose following is meaningful only relative to the same extractor:
``shifted`` then reads as followed although it is not (a real DWPose sees the shift), while ``poses moved`` shows
the measure reacting. Identity: with ``--clip`` the real CLIP vision model; without it a stand-in embedding (each
picture shrunk to 16x16 pixels, mean removed), because the tiny kit's random 2-layer CLIP sees every picture alike.

    python scripts/quality_real_data.py --video driving_video_00002.mp4 --out quality_try --jpg docs/quality_report.jpg
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pose  # noqa: E402
import steadydancer_core as sd  # noqa: E402
from steadydancer_core import tiny_kit  # noqa: E402

SEGMENT_FRAMES, SEGMENT_OVERLAP = 81, 9     # where a long video's windows would meet


def frames_of(video: Path, height: int, limit: int | None, shift: tuple[float, float] = (0.0, 0.0)):
    """Chunks of the video resized to ``height`` rows (uint8), optionally moved by (dx, dy) of the frame."""
    for chunk in sd.iter_video_frames(video, chunk_frames=8, max_frames=limit):
        out = []
        for frame in sd.frames_to_uint8(chunk):
            h, w = frame.shape[:2]
            size = (int(round(w * height / h)) // 2 * 2, height)
            image = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            if shift != (0.0, 0.0):
                m = np.float32([[1, 0, shift[0] * size[0]], [0, 1, shift[1] * size[1]]])
                image = cv2.warpAffine(image, m, size, borderMode=cv2.BORDER_REPLICATE)
            out.append(image)
        yield np.stack(out)


def pixels_embedding(images) -> np.ndarray:
    """A stand-in for CLIP on real pictures: each image shrunk to 16x16 (area), mean removed -> [N, 768]."""
    out = []
    for image in images:
        small = cv2.resize(np.asarray(image, np.float32), (16, 16), interpolation=cv2.INTER_AREA).ravel()
        out.append(small - small.mean())
    return np.stack(out)


def moved(frames, dx: float, dy: float) -> list:
    return [f.replace(bodies=f.bodies + np.float32([dx, dy]),
                      hands=np.where(f.hands >= 0, f.hands + np.float32([dx, dy]), f.hands),
                      faces=np.where(f.faces >= 0, f.faces + np.float32([dx, dy]), f.faces)) for f in frames]


def write_jpg(picture: np.ndarray, path: Path, width: int = 1200, quality: int = 70) -> None:
    """The picture (RGB) shrunk to ``width`` pixels and written as a JPEG small enough for the docs."""
    height = int(round(picture.shape[0] * width / picture.shape[1]))
    small = cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="folder for the reports, their pictures and the table")
    ap.add_argument("--height", type=int, default=832, help="frames are resized to this height (default 832)")
    ap.add_argument("--frames", type=int, default=None, help="use only the first N frames")
    ap.add_argument("--shift", type=float, default=0.1, help="the mismatch, as a fraction of the frame (0.1)")
    ap.add_argument("--detector", type=Path, help="yolox_l.onnx (default: the tiny kit's stand-in)")
    ap.add_argument("--estimator", type=Path, help="dw-ll_ucoco_384.onnx (default: the tiny kit's stand-in)")
    ap.add_argument("--clip", type=Path, help="clip_vision_h.safetensors (default: a 16x16-pixel stand-in)")
    ap.add_argument("--jpg", type=Path, help="also write the 'itself' and 'shifted' pictures side by side here")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        kit = Path(tmp) / "models"
        if not (args.detector and args.estimator):
            tiny_kit.write_kit(kit)
        det = args.detector or kit / "dwpose" / tiny_kit.DETECTOR_FILE
        est = args.estimator or kit / "dwpose" / tiny_kit.ESTIMATOR_FILE
        extractor = pose.load_models(det, est, providers=pose.CPU_ONLY)
        clip = sd.load_image_encoder(args.clip, dtype=torch.float32) if args.clip else pixels_embedding
        print("extracting the video's poses ...")
        own = [p for chunk in frames_of(args.video, args.height, args.frames) for p in extractor(list(chunk))]
        photo = next(frames_of(args.video, args.height, 1))[0]
        segments = sd.plan_segments(len(own), SEGMENT_FRAMES, SEGMENT_OVERLAP)
        runs = {
            "itself": (frames_of(args.video, args.height, args.frames), own),
            "shifted": (frames_of(args.video, args.height, args.frames, (args.shift, args.shift)), own),
            "poses moved": (frames_of(args.video, args.height, args.frames), moved(own, args.shift, args.shift)),
        }
        reports = []
        for label, (frames, poses) in runs.items():
            print(f"report: {label} ...")
            report = sd.quality_report(photo, frames, poses, clip=clip, pose_extractor=extractor,
                                       segments=segments, label=label,
                                       progress=lambda done, total: print(f"  {done} frames", end="\r"))
            print(f"  {report.summary_line()}")
            sd.write_report(report, args.out / f"{label.replace(' ', '_')}.mp4", overwrite=True)
            reports.append(report)
    comparison = sd.compare_reports(reports)
    (args.out / "comparison.md").write_text(comparison.table + "\n")
    cv2.imwrite(str(args.out / "comparison.png"), cv2.cvtColor(comparison.plot(), cv2.COLOR_RGB2BGR))
    print(comparison.table)
    if args.jpg:
        write_jpg(reports[1].plot(), args.jpg)
        print(f"wrote {args.jpg} ({args.jpg.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
