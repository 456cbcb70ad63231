"""GPU suite part ``vae``: Wan VAE decode of 81 frames at 832x480 (latent 21x60x104), bf16, random weights:
peak allocated above the weights and seconds, untiled and tiled (``tile="auto"`` under a memory budget, 3 GiB by
default: the planner's choice on a small card).

    python benchmarks/gpu/vae.py [--budget-gib 3]
"""
from __future__ import annotations

import time

import torch
from common import GIB, reset_peak, run_part, sync

import steadydancer_core as sd

FULL_LATENT = (21, 60, 104)
TINY_LATENT = (2, 8, 12)


def add_args(p):
    p.add_argument("--budget-gib", type=float, default=3.0, help="memory budget of the tiled decode (GiB)")


def body(args, device):
    config = sd.VAEConfig.tiny() if args.tiny else sd.VAEConfig()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        vae = sd.WanVAE(config)
    vae = vae.to(dtype).eval().requires_grad_(False)
    latent = TINY_LATENT if args.tiny else FULL_LATENT
    z = torch.randn(1, config.z_dim, *latent, generator=torch.Generator().manual_seed(0)).to(device)
    budget = int(args.budget_gib * GIB) if not args.tiny else 8 << 20
    result = {"latent": list(latent), "dtype": str(dtype), "budget_gib": budget / GIB,
              "weights_gib": sd.module_bytes(vae) / GIB}
    for name, kw in (("untiled", {"tile": "off"}), ("tiled", {"tile": "auto", "memory_budget": budget})):
        reset_peak(device)
        base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        start = time.perf_counter()
        with torch.inference_mode():
            video = vae.decode(z, **kw)
        sync(device)
        result[name] = {
            "seconds": time.perf_counter() - start, "frames": int(video.shape[2]),
            "size": [int(video.shape[-1]), int(video.shape[-2])],
            "peak_gib_above_weights": ((torch.cuda.max_memory_allocated(device) - base) / GIB
                                       if device.type == "cuda" else None),
            "plan": vae.last_tile_plan.explanation, "tile": vae.last_tile_plan.tile}
        del video
    def fmt(r):
        peak = f"peak +{r['peak_gib_above_weights']:.1f} GiB, " if r["peak_gib_above_weights"] is not None else ""
        return f"{peak}{r['seconds']:.1f} s"
    result["summary"] = (f"untiled {fmt(result['untiled'])}; tiled {result['tiled']['tile']} under "
                         f"{args.budget_gib:g} GiB {fmt(result['tiled'])}")
    return result


if __name__ == "__main__":
    raise SystemExit(run_part("vae", __doc__, body, add_args))
