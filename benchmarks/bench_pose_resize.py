"""How far ``pose_resize = direct`` (the default) is from ``official`` on real inputs.

``official`` resizes every pose frame as the official pipeline does: PIL bicubic to the photo's size
(generate_dancer.py), then torch bicubic without antialias to the output size (``generate()``). ``direct`` resizes it
once, PIL bicubic, straight to the output size. On a real photo and the official pose frames this script reports:

  * the resized pose frames, in 0..1: max and mean absolute difference (the official second step is computed as the
    pipeline does, on [-1, 1] values, and is not clamped);
  * with the tiny random-weight kit (``steadydancer_core.tiny_kit``): what ``generate()`` hands its DiT in each mode
    (``condition``, ``condition_null``, ``ref_c``, ``clip_fea_c``, recorded by a forward hook) and the final latent and
    decoded video: relative L2 of direct against official. Random weights say how much the inputs move, not how the
    difference looks with the real model.

Writes benchmarks/results/pose_resize.json.

    python benchmarks/bench_pose_resize.py --photo ../shared/data/ref_image_00001.png \\
        --poses ../shared/data/official_video00002_img00002
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OFFICIAL_480P_AREA = 832 * 480


def _read_rgb(path: Path):
    """[H, W, 3] float in [0, 1], as generate_dancer.py reads an image (PIL, RGB)."""
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(path) as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).float().div_(255.0)


def _rel_l2(a, b) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def compare_frames(frames, photo_hw, size) -> dict:
    """Pose frames [T, H', W', 3] resized both ways (one frame at a time) -> max / mean abs difference in 0..1."""
    import torch.nn.functional as F

    from steadydancer_core import resize_like_pil

    worst, total, count = 0.0, 0.0, 0
    for i in range(frames.shape[0]):
        direct = resize_like_pil(frames[i:i + 1], size)[0]
        at_photo = resize_like_pil(frames[i:i + 1], photo_hw).permute(0, 3, 1, 2).mul(2.0).sub(1.0)
        official = F.interpolate(at_photo, size=size, mode="bicubic")[0].permute(1, 2, 0).add(1.0).div(2.0)
        diff = (direct - official).abs()
        worst, total, count = max(worst, float(diff.max())), total + float(diff.double().sum()), count + diff.numel()
    return {"max_abs": round(worst, 4), "mean_abs": round(total / count, 5)}


def _generate(model, photo, positive, negative, mode: str, frames: int, steps: int):
    """generate() + decode in one mode -> (what the DiT was given, result, video)."""
    import torch

    import steadydancer_core as sd

    seen = {"conditions": []}

    def hook(_module, args):
        # condition (COND pass, always first) and condition_null (the negative-pose pass, on the window's steps)
        # are the same tensors at every step: keep the distinct ones in order of appearance
        _x, _t, _context, _y, condition, _ref_x, ref_c, _clip_x, clip_c = args
        for c in condition:
            if not any(torch.equal(c.float().cpu(), d) for d in seen["conditions"]):
                seen["conditions"].append(c.float().cpu().clone())
        seen.setdefault("ref_c", ref_c[0].float().cpu().clone())
        seen.setdefault("clip_fea_c", clip_c[:1].float().cpu().clone())

    settings = sd.GenerationSettings(prompt="a person dancing", seed=0, steps=steps, max_area=OFFICIAL_480P_AREA,
                                     length=frames, pose_cfg=1.0, pose_cfg_start=0.0, pose_cfg_end=1.0, first_frame="model",
                                     tiling="off", pose_resize=mode)
    handle = model.dit.register_forward_pre_hook(hook)
    try:
        result = sd.generate(model, photo, positive, negative, settings)
    finally:
        handle.remove()
    seen["condition"], seen["condition_null"] = seen.pop("conditions")
    return seen, result, sd.decode(model, result, tiling="off")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photo", type=Path, required=True, help="the photo (e.g. ref_image_00001.png, 864x1184)")
    ap.add_argument("--poses", type=Path, required=True, help="a folder with positive/ and negative/ pose frames")
    ap.add_argument("--frames", type=int, default=17, help="frames generated with the tiny kit (4n+1)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "pose_resize.json")
    args = ap.parse_args()

    import torch

    import steadydancer_core as sd
    from steadydancer_core import tiny_kit

    photo = _read_rgb(args.photo)
    read = lambda sub: torch.stack([_read_rgb(p) for p in sorted((args.poses / sub).glob("*.jpg"))])  # noqa: E731
    positive, negative = read("positive"), read("negative")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        m = Path(tmp) / "models"
        tiny_kit.write_kit(m)
        model = sd.load_model(sd.ModelFiles(m / "diffusion_models" / tiny_kit.DIT_FP16, m / "vae" / tiny_kit.VAE_FILE,
                                            m / "text_encoders" / tiny_kit.T5_FP16,
                                            m / "clip_vision" / tiny_kit.CLIP_FILE),
                              sd.LoaderSettings(precision="fp32", offload="all_resident"))
        runs = {mode: _generate(model, photo, positive, negative, mode, args.frames, args.steps)
                for mode in sd.POSE_RESIZE_MODES}
    (seen_d, res_d, video_d), (seen_o, res_o, video_o) = runs["direct"], runs["official"]
    size = (res_d.height, res_d.width)
    photo_hw = tuple(photo.shape[:2])
    record = {
        "photo": args.photo.name, "photo_hw": list(photo_hw), "pose_hw": list(positive.shape[1:3]),
        "output_hw": list(size), "max_area": OFFICIAL_480P_AREA,
        "pose_frames": {"positive": compare_frames(positive, photo_hw, size),
                        "negative": compare_frames(negative, photo_hw, size), "frames": int(positive.shape[0])},
        "tiny_kit": {"frames": args.frames, "steps": args.steps,
                     **{key: round(_rel_l2(seen_d[key], seen_o[key]), 5) for key in
                        ("condition", "condition_null", "ref_c", "clip_fea_c")},
                     "final_latent": round(_rel_l2(res_d.segments[0].latent, res_o.segments[0].latent), 5),
                     "video": round(_rel_l2(video_d, video_o), 5),
                     "video_max_abs": round(float((video_d - video_o).abs().max()), 4)},
        "seconds": round(time.perf_counter() - t0, 1), "python": platform.python_version(),
        "torch": torch.__version__,
    }
    print(json.dumps(record, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
