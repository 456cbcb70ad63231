"""Peak host memory (RSS) of the align + sample path versus the driving video's length, tiny models on the CPU.

A 720x1280 photo (portrait) is resized as the official code does (about 1024x576); synthetic dancing keypoints
(``bench_pose.dancer``) for N driving frames are aligned to it and sampled with the tiny model kit
(``steadydancer_core.tiny_kit``, 1 step, small output area, default 81-frame segments with a 9-frame overlap). The
pose frames are drawn at the official 2x canvas and resized to the photo, as in real use: what grows with the
video is the pose frames, not the (tiny) networks.

  * ``lazy``: ``pose.pose_sources`` (what AlignPose's aligned_pose socket and the CLI give ``generate``): keypoints
    are held, each segment's frames are rendered when it is sampled;
  * ``eager``: every positive and negative frame rendered up front as float IMAGE tensors (AlignPose's IMAGE
    outputs with image_outputs = all_frames, the previous behaviour).

Each measurement runs in a fresh process (``ru_maxrss``, the process's peak resident set). Writes
benchmarks/results/memory.json.

    python benchmarks/bench_memory.py --frames 81 401 --eager-frames 81
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

PHOTO_HW = (1280, 720)           # the 720x1280 video / photo
DRIVING_HW = (1280, 720)
MAX_AREA = 96 * 160              # output area: keeps the tiny networks' share small
GOAL_RATIO = 1.25


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # kilobytes on Linux


def run_one(kit_dir: Path, frames: int, mode: str) -> dict:
    """Align N synthetic frames, sample them; return the figures (in this process)."""
    import numpy as np
    import torch

    import pose
    import steadydancer_core as sd
    from bench_pose import dancer
    from steadydancer_core import tiny_kit

    torch.manual_seed(0)
    m = kit_dir / "models"
    model = sd.load_model(m / "diffusion_models" / tiny_kit.DIT_FP16, m / "vae" / tiny_kit.VAE_FILE,
                          m / "text_encoders" / tiny_kit.T5_FP16, m / "clip_vision" / tiny_kit.CLIP_FILE)
    ref_hw = pose.reference_size(*PHOTO_HW)
    yy, xx = np.mgrid[0:ref_hw[0], 0:ref_hw[1]]
    photo = torch.from_numpy(np.stack([yy / ref_hw[0], xx / ref_hw[1], 0.5 + 0 * yy], -1)).float()
    reference = dancer(0, ref_hw, size=1.1)
    baseline = _peak_rss_mb()

    t0 = time.perf_counter()
    aligned = pose.align(reference, [dancer(t, DRIVING_HW, size=0.8) for t in range(frames)])
    positive, negative = pose.pose_sources(aligned, 0)
    if mode == "eager":
        def render_all(source):
            out = torch.empty((len(source), *source.frame_hw, 3))
            for i in range(len(source)):
                out[i] = torch.from_numpy(source.frame(i)).float().div_(255.0)
            return out
        positive, negative = render_all(positive), render_all(negative)
    settings = sd.GenerationSettings(prompt="a person dancing", steps=1, max_area=MAX_AREA, vae_tile=False)
    result = sd.generate(model, photo, positive, negative, settings)
    seconds = time.perf_counter() - t0
    return {"frames": frames, "mode": mode, "segments": len(result.segments), "canvas_hw": list(aligned.canvas_hw),
            "photo_hw": list(ref_hw), "output_hw": [result.height, result.width],
            "peak_rss_mb": round(_peak_rss_mb(), 1), "rss_after_loading_mb": round(baseline, 1),
            "seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[81, 401])
    ap.add_argument("--eager-frames", type=int, nargs="*", default=[81],
                    help="frame counts also measured with every frame rendered up front (memory grows fast)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "memory.json")
    ap.add_argument("--child", nargs=3, metavar=("KIT", "FRAMES", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_one(Path(args.child[0]), int(args.child[1]), args.child[2])))
        return

    from steadydancer_core import tiny_kit

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        kit = Path(tmp)
        tiny_kit.write_kit(kit / "models", kit / "inputs")
        plan = [(n, "lazy") for n in args.frames] + [(n, "eager") for n in args.eager_frames]
        for frames, mode in plan:
            out = subprocess.run([sys.executable, __file__, "--child", str(kit), str(frames), mode],
                                 check=True, capture_output=True, text=True).stdout
            record = json.loads(out.strip().splitlines()[-1])
            runs.append(record)
            print(f"{mode:5s} {frames:5d} frames ({record['segments']} segments): peak RSS "
                  f"{record['peak_rss_mb']:8.1f} MB (after loading {record['rss_after_loading_mb']:.1f} MB), "
                  f"{record['seconds']:.1f} s", flush=True)
    lazy = {r["frames"]: r["peak_rss_mb"] for r in runs if r["mode"] == "lazy"}
    summary = {}
    if len(lazy) > 1:
        shortest, longest = min(lazy), max(lazy)
        ratio = lazy[longest] / lazy[shortest]
        summary = {"lazy_ratio": round(ratio, 3), "ratio_of": [longest, shortest], "goal_ratio": GOAL_RATIO,
                   "meets_goal": ratio <= GOAL_RATIO}
        print(f"lazy peak RSS {longest} / {shortest} frames: {ratio:.3f} (goal <= {GOAL_RATIO})")
    record = {"photo_hw": list(PHOTO_HW), "max_area": MAX_AREA, "steps": 1, "device": "cpu", "runs": runs,
              **summary, "python": platform.python_version(), "cpu": platform.processor() or platform.machine()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
