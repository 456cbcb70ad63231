"""Pose alignment + rendering speed on one CPU core.

Synthetic dancing poses (full body, both hands, face) are aligned to a photo pose and drawn:
  * ``direct``: drawn straight at the target size (default 832x480, H x W portrait);
  * ``official_canvas``: drawn at the official canvas (2x the resized photo) then area-resized to the
    target, i.e. the faithful path; ``+negative`` also augments and draws the negative condition.
Single core: ``cv2.setNumThreads(1)``, BLAS threads 1, process pinned to one CPU where possible.
Writes benchmarks/results/pose.json.

    python benchmarks/bench_pose.py --frames 240 --height 832 --width 480
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pose import PoseFrame, align, augment_frames, reference_size, render_frames  # noqa: E402

TEMPLATE = np.array([[0.5, 0.2], [0.5, 0.29], [0.4, 0.29], [0.35, 0.4], [0.3, 0.5], [0.6, 0.29], [0.65, 0.4],
                     [0.7, 0.5], [0.45, 0.56], [0.44, 0.75], [0.43, 0.93], [0.55, 0.56], [0.56, 0.75],
                     [0.57, 0.93], [0.48, 0.18], [0.52, 0.18], [0.46, 0.19], [0.54, 0.19]], np.float32)


def dancer(t: int, image_hw: tuple[int, int], size: float = 1.0) -> PoseFrame:
    body = (TEMPLATE - 0.5) * size + 0.5
    body = body + np.float32(0.05 * math.sin(t / 9.0)) * np.array([1, 0], np.float32)
    for wrist, elbow, sign in ((4, 3, -1), (7, 6, 1)):
        a = math.sin(t / 5.0 + sign)
        body[wrist] = body[elbow] + np.array([sign * 0.08 * math.cos(a), -0.1 * a], np.float32)
    fan = np.linspace(0, 0.035, 42, dtype=np.float32).reshape(21, 2)
    hands = np.stack([body[7] + fan, body[4] - fan])
    faces = body[0] + np.linspace(-0.02, 0.02, 136, dtype=np.float32).reshape(68, 2)
    return PoseFrame(body[None], np.ones((1, 18), bool), hands[None], faces[None], image_hw)


def measure(fn, frames: int) -> float:
    t0 = time.perf_counter()
    n = fn()
    dt = time.perf_counter() - t0
    assert n == frames
    return frames / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--height", type=int, default=832)
    ap.add_argument("--width", type=int, default=480)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "pose.json")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    pinned = False
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        pinned = True

    target = (args.height, args.width)
    ref_hw = reference_size(*target)
    reference = dancer(0, ref_hw, size=1.1)
    driving = [dancer(t, (1280, 720), size=0.8) for t in range(args.frames)]

    def direct():
        aligned = align(reference, driving)
        return sum(1 for _ in render_frames(aligned.frames, target))

    def official():
        aligned = align(reference, driving)
        return sum(1 for _ in render_frames(aligned.frames, aligned.canvas_hw, output_hw=target))

    def official_both():
        aligned = align(reference, driving)
        pos = render_frames(aligned.frames, aligned.canvas_hw, output_hw=target)
        neg = render_frames(augment_frames(aligned.frames, seed=0), aligned.canvas_hw, output_hw=target)
        return sum(1 for _ in zip(pos, neg))

    def align_only():
        return len(align(reference, driving).frames)

    results = {}
    for name, fn in (("align_only", align_only), ("align_render_direct", direct),
                     ("align_render_official_canvas_resized", official),
                     ("align_render_official_canvas_resized_positive_and_negative", official_both)):
        fps = max(measure(fn, args.frames) for _ in range(args.repeats))
        results[name] = round(fps, 1)
        print(f"{name:60s} {fps:9.1f} frames/s")

    canvas = tuple(2 * v for v in ref_hw)
    record = {
        "target_hw": list(target), "official_canvas_hw": list(canvas), "frames": args.frames,
        "threads": 1, "pinned_to_one_cpu": pinned, "frames_per_second": results,
        "requirement_frames_per_second": 30,
        "cpu": platform.processor() or platform.machine(), "opencv": cv2.__version__, "numpy": np.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
