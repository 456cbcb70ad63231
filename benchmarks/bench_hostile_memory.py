"""Peak host memory (RSS) of huge inputs through the real photo and driving-video paths, tiny models on the CPU.

Inputs are made from the tiny kit's own photo and dance (``steadydancer_core.tiny_kit``), scaled up, so its tiny
pose models find the same person:

  * photos: the kit photo at 1, 24 and 100 megapixels as RGBA PNGs with transparent corners (the photo is
    composited, as a cut-out would be);
  * driving clips: the kit dance at 4K (3840x2160, 1.5 s) and 8K (7680x4320, 1 s), 24 fps H.264;

Each is measured ``--repeats`` times in a fresh process (``ru_maxrss``; the highest peak is kept) in two modes:

  * ``first_pose``: what the CLI does up to the first pose: the photo read (``cli.read_image``) and its pose
    (``pose.extract_reference``); a clip's frames read for poses (``video_io.iter_pose_frames``) and the first
    frame's pose;
  * ``cli``: the whole CLI job on the tiny kit (``python -m steadydancer_core.cli``: poses, alignment, loading,
    sampling 1 step at max_area 4096, writing the mp4), the kit's own photo / dance standing in for the input not
    measured.

Checks: up to the first pose, a photo's peak stays within ``benchmarks/results/memory.json``'s 24 MP figure and at
most ``GOAL_PHOTO_MB`` over its 1 MP figure, a clip's within its 81-frame figure; the whole CLI job with the input
adds at most ``GOAL_PHOTO_MB`` over the same job with the kit's own photo / dance (measured here too: ``kit_photo``,
``kit_video``). Writes benchmarks/results/hostile_memory.json.

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


def _first_pose(kind: str, path: Path, kit: dict) -> dict:
    """Child: the CLI's photo / video path up to the first pose; returns its figures."""
    import resource

    import pose
    from steadydancer_core import cli, iter_pose_frames

    det, est = kit["detector"], kit["pose_model"]
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


def _summary(results: list) -> dict:
    """Repeated measurements -> the last one's details with every peak and the highest as ``peak_rss_mb`` (the
    figure compared with the limits: RSS peaks vary by tens of MB from run to run)."""
    peaks = [r["peak_rss_mb"] for r in results]
    return {**results[-1], "peak_rss_mb": max(peaks), "peaks_mb": peaks}


def _cli_args(kit: dict, photo, video, out: Path) -> list:
    return [sys.executable, "-m", "steadydancer_core.cli", "--photo", str(photo), "--video", str(video),
            "--prompt", "a person dancing", "--dit", kit["dit"], "--vae", kit["vae"], "--t5", kit["t5"],
            "--clip", kit["clip"], "--detector", kit["detector"], "--pose-model", kit["pose_model"],
            "--steps", "1", "--max-area", "4096", "--length", "0", "--out", str(out)]


def _make_kit(folder: Path) -> dict:
    """Child: write the tiny kit; its file paths."""
    from steadydancer_core import tiny_kit

    kit = tiny_kit.write_kit(folder / "models", folder / "inputs")
    m = kit.models_dir
    return {"dit": str(m / "diffusion_models" / tiny_kit.DIT_FP16), "vae": str(m / "vae" / tiny_kit.VAE_FILE),
            "t5": str(m / "text_encoders" / tiny_kit.T5_FP16), "clip": str(m / "clip_vision" / tiny_kit.CLIP_FILE),
            "detector": str(m / "dwpose" / tiny_kit.DETECTOR_FILE),
            "pose_model": str(m / "dwpose" / tiny_kit.ESTIMATOR_FILE), "photo": str(kit.photo),
            "video": str(kit.video)}


def _child(*args) -> dict:
    """Run this script as a child with ``args``; the JSON its last line prints."""
    out = subprocess.run([sys.executable, __file__, *map(str, args)], check=True, capture_output=True, text=True,
                         cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1])


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
    ap.add_argument("--repeats", type=int, default=3, help="measurements per input and mode (the highest is kept)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "hostile_memory.json")
    ap.add_argument("--child", nargs=3, metavar=("KIND", "PATH", "KIT"), help=argparse.SUPPRESS)
    ap.add_argument("--make", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, path, kit = args.child
        print(json.dumps(_first_pose(kind, Path(path), json.loads(kit))))
        return
    if args.make:                                       # inputs are made in children: a child process inherits
        what, *rest = args.make                         # its parent's peak RSS as its own starting peak (Linux)
        if what == "kit":
            print(json.dumps(_make_kit(Path(rest[0]))))
        elif what == "photo":
            print(json.dumps({"path": str(_photo(Path(rest[0]), float(rest[1]), Path(rest[2])))}))
        else:
            print(json.dumps({"path": str(_clip(Path(rest[0]), *CLIPS[rest[1]], Path(rest[2])))}))
        return

    runs = []
    with tempfile.TemporaryDirectory(prefix="hostile-memory-") as tmp:
        tmp = Path(tmp)
        kit = _child("--make", "kit", tmp)
        inputs = [("photo", f"{mp:g}mp", ("photo", kit["photo"], mp, tmp / f"photo_{mp:g}mp.png"))
                  for mp in args.photo_mp]
        inputs += [("video", name, ("clip", kit["video"], name, tmp / f"clip_{name}.mp4")) for name in args.clips]
        for kind, name, make in inputs + [("photo", "kit_photo", None), ("video", "kit_video", None)]:
            made = make is not None
            path = Path(_child("--make", *make)["path"]) if made else Path(kit[kind])
            record = {"input": kind if made else "baseline", "name": name,
                      "file_mb": round(path.stat().st_size / 2 ** 20, 1)}
            if "first_pose" in args.modes:
                record["first_pose"] = _summary([_child("--child", kind, path, json.dumps(kit))
                                                 for _ in range(args.repeats)])
            if "cli" in args.modes:
                photo = path if kind == "photo" else kit["photo"]
                video = path if kind == "video" else kit["video"]
                results = []
                for i in range(args.repeats):
                    peak, seconds, _ = _measure(_cli_args(kit, photo, video, tmp / f"out_{name}_{i}.mp4"), REPO)
                    results.append({"peak_rss_mb": round(peak, 1), "seconds": round(seconds, 1)})
                record["cli"] = _summary(results)
            runs.append(record)
            print(json.dumps(record), flush=True)
            if made:
                path.unlink()
    reference = _reference()
    record = {"runs": runs, "reference_memory_json": reference, "goal_photo_added_mb": GOAL_PHOTO_MB,
              "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
              "cpus": os.cpu_count()}
    base = {r["name"]: r for r in runs if r["input"] == "baseline"}
    checks = {}
    photo_limit = min(reference.get("photo_24mp", float("inf")), reference.get("photo_1mp", 0) + GOAL_PHOTO_MB)
    for r in runs:
        if r["input"] == "baseline":
            continue
        limit = photo_limit if r["input"] == "photo" else reference.get("frames_81")
        if "first_pose" in r and limit is not None:
            checks[f"{r['name']}_first_pose"] = {"peak_rss_mb": r["first_pose"]["peak_rss_mb"], "limit_mb": limit,
                                                 "within": r["first_pose"]["peak_rss_mb"] <= limit}
        own = base.get(f"kit_{r['input']}", {}).get("cli")
        if "cli" in r and own is not None:
            added = round(r["cli"]["peak_rss_mb"] - own["peak_rss_mb"], 1)
            checks[f"{r['name']}_cli"] = {"peak_rss_mb": r["cli"]["peak_rss_mb"], "added_over_kit_input_mb": added,
                                          "limit_added_mb": GOAL_PHOTO_MB, "within": added <= GOAL_PHOTO_MB}
    record["checks"] = checks
    for key, check in checks.items():
        limit = (f"limit {check['limit_mb']:.1f} MB" if "limit_mb" in check else
                 f"{check['added_over_kit_input_mb']:+.1f} MB over the kit's own input, limit +{GOAL_PHOTO_MB}")
        print(f"{key}: peak {check['peak_rss_mb']:.1f} MB ({limit}): {'within' if check['within'] else 'OVER'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
