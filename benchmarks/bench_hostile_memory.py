"""Peak host memory (RSS) of huge inputs through the real photo and driving-video paths, tiny models on the CPU.

Inputs are made from the tiny kit's own photo and dance (``steadydancer_core.tiny_kit``), scaled up, so its tiny
pose models find the same person:

  * photos: the kit photo at 1, 24 and 100 megapixels as RGBA PNGs with transparent corners (the photo is
    composited, as a cut-out would be);
  * driving clips: the kit dance at 4K (3840x2160, 1.5 s) and 8K (7680x4320, 1 s), 24 fps H.264;

Each is measured in a fresh process (``ru_maxrss``) in two modes:

  * ``first_pose``: what the CLI does up to the first pose: the photo read (``cli.read_image``) and its pose
    (``pose.extract_reference``); a clip's frames read for poses (``video_io.iter_pose_frames``) and the first
    frame's pose;
  * ``cli``: the whole CLI job on the tiny kit (``python -m steadydancer_core.cli``: poses, alignment, loading,
    sampling 1 step at max_area 4096, writing the mp4), the kit's own photo / dance standing in for the input not
    measured.

The figures are compared with ``benchmarks/results/memory.json``: a photo may add at most ``GOAL_PHOTO_MB`` over
that file's 1 MP figure and stay within its 24 MP figure; a clip stays within its 81-frame figure. Writes
benchmarks/results/hostile_memory.json.

    python benchmarks/bench_hostile_memory.py
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PHOTO_MP = (1.0, 24.0, 100.0)
CLIPS = {"4k": ((2160, 3840), 1.5), "8k": ((4320, 7680), 1.0)}
CLIP_FPS = 24
GOAL_PHOTO_MB = 600              # memory.json's goal: what a photo may add over the 1 MP one
REFERENCE = REPO / "benchmarks" / "results" / "memory.json"


def _photo(kit_photo: Path, megapixels: float, out: Path) -> Path:
    """The kit photo scaled to ``megapixels`` (aspect kept) as an RGBA PNG with transparent corners."""
    import cv2
    import numpy as np
    from PIL import Image

    rgb = cv2.cvtColor(cv2.imread(str(kit_photo)), cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    scale = (megapixels * 1e6 / (h * w)) ** 0.5
    size = (int(w * scale), int(h * scale))
    big = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
    rgba = np.concatenate([big, np.full((*big.shape[:2], 1), 255, np.uint8)], axis=2)
    del big
    corner = (size[1] // 10, size[0] // 10)
    for rows in (slice(0, corner[0]), slice(-corner[0], None)):
        for cols in (slice(0, corner[1]), slice(-corner[1], None)):
            rgba[rows, cols, 3] = 0
    Image.fromarray(rgba).save(out, compress_level=1)
    return out


def _clip(kit_video: Path, size_hw: tuple, seconds: float, out: Path) -> Path:
    """The kit dance, looped to ``seconds`` at CLIP_FPS, scaled to ``size_hw``, as H.264 (ultrafast)."""
    import cv2

    from steadydancer_core import VideoWriter, iter_pose_frames

    frames = list(iter_pose_frames(kit_video))
    with VideoWriter(out, CLIP_FPS) as writer:
        writer.preset = "ultrafast"
        for i in range(int(round(seconds * CLIP_FPS))):
            writer.write(cv2.resize(frames[i % len(frames)], size_hw[::-1], interpolation=cv2.INTER_LINEAR)[None])
    return out


def _first_pose(kind: str, path: Path, kit: Path) -> dict:
    """Child: the CLI's photo / video path up to the first pose; returns its figures."""
    import resource

    import pose
    from steadydancer_core import cli, iter_pose_frames, tiny_kit

    det = kit / "models" / "dwpose" / tiny_kit.DETECTOR_FILE
    est = kit / "models" / "dwpose" / tiny_kit.ESTIMATOR_FILE
    started = time.perf_counter()
    if kind == "photo":
        photo = cli.read_image(path, background=(255, 255, 255))
        _, resized = pose.extract_reference(photo, det, est)
        shape, count = list(photo.shape), 1
    else:
        count, first, shape = 0, None, None
        for frame in iter_pose_frames(path):
            if first is None:
                first, shape = pose.extract([frame], det, est), list(frame.shape)
            count += 1
    return {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "decoded_shape": shape, "frames": count, "seconds": round(time.perf_counter() - started, 1)}


def _measure(argv: list, cwd: Path) -> tuple[float, float, int]:
    """Run a child process; (its peak RSS in MB, seconds, exit code)."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    out, err = child.stdout.read(), child.stderr.read()
    child.stdout.close()
    child.stderr.close()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise RuntimeError(f"{argv[:4]} failed ({child.returncode}): {err.strip().splitlines()[-1:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - started, child.returncode


def _cli_args(kit, photo: Path, video: Path, out: Path) -> list:
    from steadydancer_core import tiny_kit

    m = kit.models_dir
    return [sys.executable, "-m", "steadydancer_core.cli", "--photo", str(photo), "--video", str(video),
            "--prompt", "a person dancing", "--dit", str(m / "diffusion_models" / tiny_kit.DIT_FP16),
            "--vae", str(m / "vae" / tiny_kit.VAE_FILE), "--t5", str(m / "text_encoders" / tiny_kit.T5_FP16),
            "--clip", str(m / "clip_vision" / tiny_kit.CLIP_FILE),
            "--detector", str(m / "dwpose" / tiny_kit.DETECTOR_FILE),
            "--pose-model", str(m / "dwpose" / tiny_kit.ESTIMATOR_FILE), "--steps", "1", "--max-area", "4096",
            "--length", "0", "--out", str(out)]


def _reference() -> dict:
    """memory.json's figures: the 1 MP and 24 MP photo runs and the 81-frame run (lazy, direct)."""
    runs = json.loads(REFERENCE.read_text())["runs"] if REFERENCE.is_file() else []
    pick = {}
    for r in runs:
        if r["mode"] == "lazy" and r["pose_resize"] == "direct" and r["frames"] == 81:
            pick.setdefault(f"photo_{r['photo_mp']:g}mp" if r["photo_mp"] else "frames_81", r["peak_rss_mb"])
    return pick


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photo-mp", type=float, nargs="*", default=list(PHOTO_MP))
    ap.add_argument("--clips", nargs="*", default=list(CLIPS), choices=list(CLIPS))
    ap.add_argument("--modes", nargs="*", default=["first_pose", "cli"], choices=["first_pose", "cli"])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "hostile_memory.json")
    ap.add_argument("--child", nargs=3, metavar=("KIND", "PATH", "KIT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, path, kit = args.child
        print(json.dumps(_first_pose(kind, Path(path), Path(kit))))
        return

    from steadydancer_core import tiny_kit

    runs = []
    with tempfile.TemporaryDirectory(prefix="hostile-memory-") as tmp:
        tmp = Path(tmp)
        kit = tiny_kit.write_kit(tmp / "models", tmp / "inputs")
        inputs = [("photo", f"{mp:g}mp", lambda mp=mp: _photo(kit.photo, mp, tmp / f"photo_{mp:g}mp.png"))
                  for mp in args.photo_mp]
        inputs += [("video", name, lambda name=name: _clip(kit.video, *CLIPS[name], tmp / f"clip_{name}.mp4"))
                   for name in args.clips]
        inputs.append(("baseline", "kit", lambda: None))
        for kind, name, make in inputs:
            path = make()
            record = {"input": kind, "name": name, "file_mb": round(path.stat().st_size / 2 ** 20, 1) if path else 0}
            if "first_pose" in args.modes and path is not None:
                child = subprocess.run([sys.executable, __file__, "--child", kind, str(path), str(tmp)], check=True,
                                       capture_output=True, text=True, cwd=REPO).stdout
                record["first_pose"] = json.loads(child.strip().splitlines()[-1])
            if "cli" in args.modes:
                photo = path if kind == "photo" else kit.photo
                video = path if kind == "video" else kit.video
                peak, seconds, _ = _measure(_cli_args(kit, photo, video, tmp / f"out_{name}.mp4"), REPO)
                record["cli"] = {"peak_rss_mb": round(peak, 1), "seconds": round(seconds, 1)}
            runs.append(record)
            print(json.dumps(record), flush=True)
            if path is not None:
                path.unlink()
    reference = _reference()
    record = {"runs": runs, "reference_memory_json": reference, "goal_photo_added_mb": GOAL_PHOTO_MB,
              "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
              "cpus": os.cpu_count()}
    if reference:
        photo_limit = min(reference.get("photo_24mp", float("inf")), reference.get("photo_1mp", 0) + GOAL_PHOTO_MB)
        checks = {}
        for r in runs:
            for mode in ("first_pose", "cli"):
                if mode not in r:
                    continue
                limit = photo_limit if r["input"] == "photo" else reference.get("frames_81")
                if limit is not None and r["input"] != "baseline":
                    checks[f"{r['name']}_{mode}"] = {"peak_rss_mb": r[mode]["peak_rss_mb"], "limit_mb": limit,
                                                     "within": r[mode]["peak_rss_mb"] <= limit}
        record["checks"] = checks
        for key, check in checks.items():
            print(f"{key}: peak {check['peak_rss_mb']:.1f} MB (limit {check['limit_mb']:.1f}): "
                  f"{'within' if check['within'] else 'OVER'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
