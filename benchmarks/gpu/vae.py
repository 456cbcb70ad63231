"""GPU proof part ``vae``: the Wan VAE decode of 81 frames at 832x480 (latent 21x60x104), random weights, in the
loader's default precision (the ``dtype`` default of ``load_vae``: float32): seconds, peak allocated above the
weights, peak reserved and the CUDA context beside it, untiled and tiled (``tile="auto"`` under a memory budget,
3 GiB by default: the planner's choice on a small card). A one-frame decode first loads the kernels, so neither
timed decode pays for that.

    python3 benchmarks/gpu/vae.py [--budget-gib 3]
"""
from __future__ import annotations

import inspect
import time

import torch
from common import GIB, memory, memory_text, reset_peak, run_part, sync

import steadydancer_core as sd

FULL_LATENT = (21, 60, 104)
TINY_LATENT = (2, 8, 12)


def loader_dtype() -> torch.dtype:
    """The precision ``load_vae`` loads the VAE in when none is asked for."""
    return inspect.signature(sd.load_vae).parameters["dtype"].default


def add_args(p):
    p.add_argument("--budget-gib", type=float, default=3.0, help="memory budget of the tiled decode (GiB)")


def decode_once(vae, z, device, kw) -> dict:
    reset_peak(device)
    base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    start = time.perf_counter()
    with torch.inference_mode():
        video = vae.decode(z, **kw)
    sync(device)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "frames": int(video.shape[2]), "size": [int(video.shape[-1]), int(video.shape[-2])],
            "peak_gib_above_weights": ((torch.cuda.max_memory_allocated(device) - base) / GIB
                                       if device.type == "cuda" else None),
            **memory(device), "plan": vae.last_tile_plan.explanation, "tile": vae.last_tile_plan.tile}


def body(args, device):
    config = sd.VAEConfig.tiny() if args.tiny else sd.VAEConfig()
    dtype = loader_dtype()
    torch.manual_seed(0)
    with torch.device(device):
        vae = sd.WanVAE(config)
    vae = vae.to(dtype).eval().requires_grad_(False)
    latent = TINY_LATENT if args.tiny else FULL_LATENT
    z = torch.randn(1, config.z_dim, *latent, generator=torch.Generator().manual_seed(0)).to(device)
    budget = int(args.budget_gib * GIB) if not args.tiny else 8 << 20
    result = {"latent": list(latent), "dtype": str(dtype), "dtype_from": "load_vae's default",
              "budget_gib": budget / GIB, "weights_gib": sd.module_bytes(vae) / GIB}
    decode_once(vae, z[:, :, :1, :8, :8], device, {"tile": "off"})          # loads the kernels
    result["untiled"] = decode_once(vae, z, device, {"tile": "off"})
    result["tiled"] = decode_once(vae, z, device, {"tile": "auto", "memory_budget": budget})

    def fmt(r):
        peak = f"peak +{r['peak_gib_above_weights']:.1f} GiB, " if r["peak_gib_above_weights"] is not None else ""
        mem = memory_text(r)
        return f"{r['seconds']:.1f} s, {peak}{mem}".rstrip(", ")
    result["summary"] = (f"{str(dtype).replace('torch.', '')}: untiled {fmt(result['untiled'])}; tiled "
                         f"{result['tiled']['tile']} under {args.budget_gib:g} GiB {fmt(result['tiled'])}")
    return result


if __name__ == "__main__":
    raise SystemExit(run_part("vae", __doc__, body, add_args))
