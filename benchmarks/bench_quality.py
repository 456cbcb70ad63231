"""Cost of the quality report per frame at 832x480 on the CPU, and its peak host memory against the video's length.

A synthetic dance (a skeleton drawn along moving keypoints over a patterned background) is written as an H.264 mp4
of N frames at 832x480 (H x W); ``sd.quality_report`` reads it back from the file with the aligned poses, as the
CLI's ``--report`` would. The models are the tiny kit's (``steadydancer_core.tiny_kit``): the two ONNX pose models
have the real models' input sizes (640x640 detector, 384x288 estimator), so DWPose's pre/post-processing costs what
it costs, but their networks are trivial; the CLIP stand-in is a 2-layer width-16 tower. So the figures are the
report's own cost (decode, masks, colour, flicker, keypoint measures, the models' plumbing); a real DWPose and the
real CLIP ViT-H add their network time, measured apart for CLIP with ``--real-clip`` (real-size random weights).

  * ``cost``: seconds per frame of N frames for: decoding only; the measures without models; + pose extraction;
    + CLIP; everything;
  * ``memory``: a fresh process per N runs the full report on N frames; its resident set is sampled after every
    chunk: the growth over the report, for each N (flat = the same for 81 and 401 frames).

One thread (torch, OpenCV), pinned to one CPU where possible; the machine's load average is recorded (other work on
the same CPU inflates the times). Writes benchmarks/results/quality.json.

    python benchmarks/bench_quality.py --cost-frames 81 --memory-frames 81 401 --real-clip 4
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pose  # noqa: E402
import steadydancer_core as sd  # noqa: E402
from steadydancer_core import tiny_kit  # noqa: E402

HW = (832, 480)
FPS = 16
TEMPLATE = np.array([[0.5, 0.2], [0.5, 0.29], [0.4, 0.29], [0.35, 0.4], [0.3, 0.5], [0.6, 0.29], [0.65, 0.4],
                     [0.7, 0.5], [0.45, 0.56], [0.44, 0.75], [0.43, 0.93], [0.55, 0.56], [0.56, 0.75],
                     [0.57, 0.93], [0.47, 0.17], [0.53, 0.17], [0.44, 0.19], [0.56, 0.19]], np.float32)


def dancer(t: int) -> pose.PoseFrame:
    body = TEMPLATE + np.float32(0.08 * math.sin(t / 7.0)) * np.array([1, 0], np.float32)
    for wrist, elbow, phase in ((4, 3, 0.0), (7, 6, 2.0)):
        a = math.sin(t / 4.0 + phase)
        body[wrist] = body[elbow] + np.array([0.1 * math.cos(a) * (-1 if wrist == 4 else 1), -0.12 * a], np.float32)
    fan = np.linspace(0, 0.04, 42, dtype=np.float32).reshape(21, 2)
    hands = np.stack([body[7] + fan, body[4] - fan])
    ang = np.linspace(0, 2 * math.pi, 68, endpoint=False)
    face = (body[0] + np.stack([0.04 * np.cos(ang), 0.03 * np.sin(ang)], 1)).astype(np.float32)
    return pose.PoseFrame(body[None], np.ones((1, 18), bool), hands[None], face[None], HW)


def background() -> np.ndarray:
    y, x = np.mgrid[0:HW[0], 0:HW[1]].astype(np.float32)
    base = np.stack([120 + 50 * np.sin(x / 23.0), 110 + 40 * np.cos(y / 31.0), 100 + 30 * np.sin((x + y) / 17.0)], -1)
    return base.astype(np.uint8)


def write_dance(path: Path, frames: int) -> Path:
    bg = background()
    with sd.VideoWriter(path, FPS) as writer:
        for t in range(frames):
            drawn = pose.render(dancer(t), HW)
            writer.write(np.where(drawn.any(-1, keepdims=True), drawn, bg)[None])
    return path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def single_thread() -> bool:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        return True
    return False


def load_models(kit_dir: Path):
    m = kit_dir
    clip = sd.load_image_encoder(m / "clip_vision" / tiny_kit.CLIP_FILE, dtype=torch.float32)
    extractor = pose.load_models(m / "dwpose" / tiny_kit.DETECTOR_FILE, m / "dwpose" / tiny_kit.ESTIMATOR_FILE,
                                 providers=pose.CPU_ONLY)
    return clip, extractor


def current_rss_mb() -> float:
    """Resident set now (Linux /proc; the peak so far elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def run_report(video: Path, frames: int, clip=None, extractor=None, progress=None) -> float:
    poses = [dancer(t) for t in range(frames)]
    photo = next(sd.iter_video_frames(video, chunk_frames=1))[0]
    t0 = time.perf_counter()
    report = sd.quality_report(photo, video, poses, clip=clip, pose_extractor=extractor, progress=progress)
    elapsed = time.perf_counter() - t0
    assert report.num_frames == frames
    return elapsed


def child(kit_dir: str, video: str, frames: int) -> None:
    single_thread()
    clip, extractor = load_models(Path(kit_dir))
    start = current_rss_mb()
    samples = []
    elapsed = run_report(Path(video), frames, clip, extractor, progress=lambda done, total: samples.append(
        current_rss_mb()))
    print(json.dumps({"frames": frames, "rss_before_report_mb": round(start, 1),
                      "rss_max_during_report_mb": round(max(samples), 1),
                      "rss_growth_mb": round(max(samples) - start, 1),
                      "rss_after_half_the_frames_mb": round(samples[len(samples) // 2], 1),
                      "peak_rss_mb": round(peak_rss_mb(), 1), "seconds": round(elapsed, 2)}))


def real_clip_seconds(images: int, tmp: Path) -> dict:
    """Seconds per image of the real-size CLIP ViT-H tower (random weights, fp32, this CPU)."""
    from safetensors.torch import save_file

    config = sd.CLIPVisionConfig()
    path = tmp / "clip_vision_h_random.safetensors"
    save_file(tiny_kit.clip_hf_state_dict(config, 0), str(path))
    encoder = sd.load_image_encoder(path, dtype=torch.float32)
    path.unlink()
    embed = sd.clip_embedder(encoder, batch_size=2)
    frame = np.random.default_rng(0).random((*HW, 3)).astype(np.float32)
    embed([frame])                                     # warm-up
    t0 = time.perf_counter()
    embed([frame] * images)
    per_image = (time.perf_counter() - t0) / images
    return {"seconds_per_image": round(per_image, 2), "images": images, "dtype": "float32",
            "per_frame_seconds_frame_and_face": round(2 * per_image, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cost-frames", type=int, default=81)
    ap.add_argument("--memory-frames", type=int, nargs="*", default=[81, 401])
    ap.add_argument("--real-clip", type=int, default=0, metavar="IMAGES",
                    help="also time the real-size CLIP ViT-H on this many images (0: skip)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "quality.json")
    ap.add_argument("--child", nargs=3, metavar=("KIT", "VIDEO", "FRAMES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    pinned = single_thread()
    record: dict = {"frame_hw": list(HW), "threads": 1, "pinned_to_one_cpu": pinned,
                    "load_average_1min_at_start": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        kit = tmp / "models"
        tiny_kit.write_kit(kit)
        clip, extractor = load_models(kit)
        n = args.cost_frames
        video = write_dance(tmp / f"dance_{n}.mp4", n)
        t0 = time.perf_counter()
        decoded = sum(int(c.shape[0]) for c in sd.iter_video_frames(video, chunk_frames=8))
        assert decoded == n
        cost = {"decode_only": (time.perf_counter() - t0) / n}
        for name, kw in (("measures_no_models", {}), ("with_pose_extractor", {"extractor": extractor}),
                         ("with_clip", {"clip": clip}), ("everything", {"clip": clip, "extractor": extractor})):
            cost[name] = min(run_report(video, n, **kw) for _ in range(3)) / n
            print(f"{name:22s} {cost[name] * 1000:8.1f} ms/frame")
        record["cost"] = {"frames": n, "ms_per_frame": {k: round(v * 1000, 1) for k, v in cost.items()}}
        memory = []
        for frames in args.memory_frames:
            path = video if frames == n else write_dance(tmp / f"dance_{frames}.mp4", frames)
            out = subprocess.run([sys.executable, __file__, "--child", str(kit), str(path), str(frames)],
                                 capture_output=True, text=True, check=True)
            memory.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"{frames:5d} frames: RSS {memory[-1]['rss_before_report_mb']} MB before the report, at most "
                  f"{memory[-1]['rss_max_during_report_mb']} MB during it; peak {memory[-1]['peak_rss_mb']} MB")
        record["memory"] = memory
        if len(memory) > 1:
            record["memory_growth_mb_longest_minus_shortest"] = round(
                memory[-1]["rss_growth_mb"] - memory[0]["rss_growth_mb"], 1)
        if args.real_clip:
            record["real_clip_vit_h"] = real_clip_seconds(args.real_clip, tmp)
            print(f"real CLIP ViT-H: {record['real_clip_vit_h']}")
    record.update({"load_average_1min_at_end": round(os.getloadavg()[0], 2),
                   "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                   "opencv": cv2.__version__, "numpy": np.__version__,
                   "models": "tiny kit: ONNX pose stand-ins with the real input sizes, 2-layer CLIP"})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
