"""Peak host memory (RSS) of the align + sample path versus the driving video's length and the photo's size, tiny
models on the CPU.

A 720x1280 photo (portrait) is resized as the official code does (about 1024x576); synthetic dancing keypoints
(``bench_pose.dancer``) for N driving frames are aligned to it and sampled with the tiny model kit
(``steadydancer_core.tiny_kit``, 1 step, small output area, default 81-frame segments with a 9-frame overlap). The
pose frames are drawn at the official 2x canvas and resized by ``pose_resize`` (default ``direct``: straight to
the output size), as in real use: what could grow with the video is the pose frames, not the (tiny) networks.

``--photo-mp``: the same 81 frames with the photo given to ``generate`` at its own size (what the sampler node gets
from Load Image), e.g. 1 and 24 megapixels (3:4 portrait); the poses are aligned to its reference size as always.

  * ``lazy``: ``pose.pose_sources`` (what AlignPose's aligned_pose socket and the CLI give ``generate``): keypoints
    are held, each segment's frames are rendered when it is sampled;
  * ``eager``: every positive and negative frame rendered up front as float IMAGE tensors (AlignPose's IMAGE
    outputs with image_outputs = all_frames, the previous behaviour).

Each measurement runs in a fresh process (``ru_maxrss``, the process's peak resident set). Writes
benchmarks/results/memory.json. ``--malloc-mmap-threshold BYTES`` runs the children with glibc's
``MALLOC_MMAP_THRESHOLD_`` fixed (glibc otherwise raises the threshold as large blocks are freed, so later large
temporaries come from the heap and its fragmentation lifts the peak from segment to segment).

    python benchmarks/bench_memory.py --frames 81 401 1601 --eager-frames 81 --photo-mp 1 24 --official-frames 81 \
        --official-photo-mp 24
"""
from __future__ import annotations

import argparse
import json
import os
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
GOAL_PHOTO_MB = 600              # what a 24 MP photo may add over a 1 MP one
PHOTO_FRAMES = 81                # driving frames of the --photo-mp runs


def photo_hw_for(megapixels: float) -> tuple[int, int]:
    """(H, W) of a 3:4 portrait photo of about ``megapixels`` (both even)."""
    w = int(round((megapixels * 1e6 * 3 / 4) ** 0.5 / 2)) * 2
    return w * 4 // 3 // 2 * 2, w


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # kilobytes on Linux


def run_one(kit_dir: Path, frames: int, mode: str, photo_mp: float = 0.0, pose_resize: str = "direct") -> dict:
    """Align N synthetic frames, sample them; return the figures (in this process). photo_mp 0: the photo at the
    reference size (as the CLI gives it); otherwise a photo of that many megapixels at its own size."""
    import torch

    import pose
    import steadydancer_core as sd
    from bench_pose import dancer
    from steadydancer_core import tiny_kit

    torch.manual_seed(0)
    m = kit_dir / "models"
    model = sd.load_model(sd.ModelFiles(m / "diffusion_models" / tiny_kit.DIT_FP16, m / "vae" / tiny_kit.VAE_FILE,
                                        m / "text_encoders" / tiny_kit.T5_FP16, m / "clip_vision" / tiny_kit.CLIP_FILE))
    photo_hw = photo_hw_for(photo_mp) if photo_mp else PHOTO_HW
    ref_hw = pose.reference_size(*photo_hw)
    in_hw = photo_hw if photo_mp else ref_hw
    photo = torch.empty((*in_hw, 3))                                   # a smooth gradient, made row by row
    for c, ramp in enumerate((torch.linspace(0, 1, in_hw[0])[:, None].expand(in_hw),
                              torch.linspace(0, 1, in_hw[1])[None, :].expand(in_hw))):
        photo[..., c] = ramp
    photo[..., 2] = 0.5
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
    settings = sd.GenerationSettings(prompt="a person dancing", steps=1, max_area=MAX_AREA, tiling="off",
                                     pose_resize=pose_resize)
    result = sd.generate(model, photo, positive, negative, settings)
    seconds = time.perf_counter() - t0
    return {"frames": frames, "mode": mode, "pose_resize": pose_resize, "photo_mp": photo_mp,
            "segments": len(result.segments), "canvas_hw": list(aligned.canvas_hw),
            "photo_hw": list(in_hw), "output_hw": [result.height, result.width],
            "peak_rss_mb": round(_peak_rss_mb(), 1), "rss_after_loading_mb": round(baseline, 1),
            "seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[81, 401])
    ap.add_argument("--eager-frames", type=int, nargs="*", default=[81],
                    help="frame counts also measured with every frame rendered up front (memory grows fast)")
    ap.add_argument("--photo-mp", type=float, nargs="*", default=[],
                    help=f"photo sizes in megapixels, each measured with {PHOTO_FRAMES} frames at its own size")
    ap.add_argument("--official-frames", type=int, nargs="*", default=[],
                    help="frame counts also measured with pose_resize = official")
    ap.add_argument("--official-photo-mp", type=float, nargs="*", default=[],
                    help="photo sizes also measured with pose_resize = official")
    ap.add_argument("--malloc-mmap-threshold", type=int, default=None, metavar="BYTES",
                    help="run the measurements with MALLOC_MMAP_THRESHOLD_=BYTES (glibc; default: glibc's own)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "memory.json")
    ap.add_argument("--child", nargs=5, metavar=("KIT", "FRAMES", "MODE", "PHOTO_MP", "POSE_RESIZE"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kit, frames, mode, photo_mp, pose_resize = args.child
        print(json.dumps(run_one(Path(kit), int(frames), mode, float(photo_mp), pose_resize)))
        return

    from steadydancer_core import tiny_kit

    env = dict(os.environ)
    if args.malloc_mmap_threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.malloc_mmap_threshold)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        kit = Path(tmp)
        tiny_kit.write_kit(kit / "models", kit / "inputs")
        plan = [(n, "lazy", 0.0, "direct") for n in args.frames] + \
            [(n, "eager", 0.0, "direct") for n in args.eager_frames] + \
            [(PHOTO_FRAMES, "lazy", mp, "direct") for mp in args.photo_mp] + \
            [(n, "lazy", 0.0, "official") for n in args.official_frames] + \
            [(PHOTO_FRAMES, "lazy", mp, "official") for mp in args.official_photo_mp]
        for frames, mode, photo_mp, pose_resize in plan:
            out = subprocess.run([sys.executable, __file__, "--child", str(kit), str(frames), mode, str(photo_mp),
                                  pose_resize], check=True, capture_output=True, text=True, env=env).stdout
            record = json.loads(out.strip().splitlines()[-1])
            runs.append(record)
            photo = f"{photo_mp:g} MP photo" if photo_mp else "reference-size photo"
            print(f"{mode:5s} {pose_resize:8s} {frames:5d} frames ({record['segments']} segments), {photo}: peak RSS "
                  f"{record['peak_rss_mb']:8.1f} MB (after loading {record['rss_after_loading_mb']:.1f} MB), "
                  f"{record['seconds']:.1f} s", flush=True)
    lazy = {r["frames"]: r["peak_rss_mb"] for r in runs
            if r["mode"] == "lazy" and not r["photo_mp"] and r["pose_resize"] == "direct"}
    summary = {}
    if len(lazy) > 1:
        shortest = min(lazy)
        ratios = {str(n): round(lazy[n] / lazy[shortest], 3) for n in sorted(lazy) if n != shortest}
        summary = {"lazy_ratios_to": shortest, "lazy_ratios": ratios, "goal_ratio": GOAL_RATIO,
                   "meets_goal": all(r <= GOAL_RATIO for r in ratios.values())}
        for n, r in ratios.items():
            print(f"lazy peak RSS {n} / {shortest} frames: {r:.3f} (goal <= {GOAL_RATIO})")
    photos = {r["photo_mp"]: r["peak_rss_mb"] for r in runs if r["photo_mp"] and r["pose_resize"] == "direct"}
    if len(photos) > 1:
        small, large = min(photos), max(photos)
        added = photos[large] - photos[small]
        summary.update({"photo_added_mb": round(added, 1), "photo_added_of": [large, small],
                        "goal_photo_mb": GOAL_PHOTO_MB, "meets_photo_goal": added <= GOAL_PHOTO_MB})
        print(f"{large:g} MP photo adds {added:.1f} MB over {small:g} MP (goal <= {GOAL_PHOTO_MB})")
    record = {"photo_hw": list(PHOTO_HW), "max_area": MAX_AREA, "steps": 1, "device": "cpu",
              "malloc_mmap_threshold": args.malloc_mmap_threshold, "runs": runs,
              **summary, "python": platform.python_version(), "cpu": platform.processor() or platform.machine()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
