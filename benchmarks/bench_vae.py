"""Wan 2.1 VAE speed and memory.

CPU: decode (and encode) time and peak RSS increase at a chosen size, random weights at the real width (dim 96),
each measurement in a fresh subprocess so the peak is its own. CUDA (when present): peak allocated memory for
81 frames at 832x480 decoded with tile="auto" under a budget, and untiled for comparison.
Writes benchmarks/results/vae.json.

    python benchmarks/bench_vae.py --height 64 --width 96 --latent-frames 2
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from steadydancer_core import (  # noqa: E402
    VAE_SPATIAL_STRIDE,
    VAE_TEMPORAL_STRIDE,
    VAEConfig,
    WanVAE,
    plan_tiles,
)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _model(dim: int, dtype: torch.dtype, device: str) -> WanVAE:
    torch.manual_seed(0)
    with torch.device(device):
        model = WanVAE(VAEConfig(dim=dim))
    return model.to(dtype).eval().requires_grad_(False)


def child(args) -> dict:
    """One measurement in this process: build, warm nothing, run once, report time and peak RSS increase."""
    torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    model = _model(args.dim, dtype, "cpu")
    h, w, lt = args.height // VAE_SPATIAL_STRIDE, args.width // VAE_SPATIAL_STRIDE, args.latent_frames
    frames = 1 + VAE_TEMPORAL_STRIDE * (lt - 1)
    tile = "off" if args.tile == "off" else ("auto" if args.tile == "auto" else int(args.tile))
    gen = torch.Generator().manual_seed(0)
    if args.mode == "decode":
        x = torch.randn(1, 16, lt, h, w, generator=gen)
    else:
        x = torch.rand(1, 3, frames, args.height, args.width, generator=gen) * 2 - 1
    base = _rss_bytes()
    t0 = time.perf_counter()
    if args.mode == "decode":
        model.decode(x, tile=tile, memory_budget=args.budget)
    else:
        model.encode(x, tile=tile, memory_budget=args.budget)
    seconds = time.perf_counter() - t0
    peak = _rss_bytes() - base
    plan = model.last_tile_plan
    return {
        "mode": args.mode, "device": "cpu", "dtype": args.dtype, "dim": args.dim, "height": args.height,
        "width": args.width, "frames": frames, "latent_frames": lt, "threads": args.threads,
        "seconds": round(seconds, 3), "seconds_per_frame": round(seconds / frames, 4),
        "peak_rss_increase_mib": round(peak / 2**20, 1), "tile": plan.tile, "plan": plan.explanation,
        "estimate_mib": round(plan.estimate_bytes / 2**20, 1),
        "measured_factor": round(peak / (args.dim * torch.empty((), dtype=dtype).element_size()
                                         * min(args.height, (plan.tile or (1 << 30, 0))[0])
                                         * min(args.width, (plan.tile or (0, 1 << 30))[1])), 2),
    }


def run_child(args, **over) -> dict:
    cmd = [sys.executable, __file__, "--child"]
    opts = {**vars(args), **over}
    for k in ("height", "width", "latent_frames", "dim", "threads", "dtype", "tile", "mode"):
        cmd += [f"--{k.replace('_', '-')}", str(opts[k])]
    if opts.get("budget") is not None:
        cmd += ["--budget", str(opts["budget"])]
    # large blocks straight from mmap, so the peak RSS follows the live tensors rather than allocator caching
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cuda_81_frames(budget_gib: float) -> dict:
    """81 frames at 832x480 (latent 21x60x104), bf16, tile='auto' under ``budget_gib`` and untiled."""
    model = _model(96, torch.bfloat16, "cuda")
    z = torch.randn(1, 16, 21, 60, 104, device="cuda")
    res = {}
    for name, kw in (("auto", {"tile": "auto", "memory_budget": int(budget_gib * 2**30)}), ("untiled", {"tile": "off"})):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        model.decode(z, **kw)
        torch.cuda.synchronize()
        res[name] = {"seconds": round(time.perf_counter() - t0, 2),
                     "peak_mib_above_weights": round((torch.cuda.max_memory_allocated() - base) / 2**20, 1),
                     "plan": model.last_tile_plan.explanation}
    return {"cuda_decode_81x832x480_bf16": res, "cuda_device": torch.cuda.get_device_name()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--latent-frames", type=int, default=2, help="latent frames (video frames = 1 + 4(n-1))")
    p.add_argument("--dim", type=int, default=96, help="VAE base width (96 = the real model)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--tile", default="off", help="'off', 'auto' or a tile size in pixels")
    p.add_argument("--budget", type=int, default=None, help="memory budget in bytes for --tile auto")
    p.add_argument("--mode", choices=("decode", "encode"), default="decode")
    p.add_argument("--cuda-budget-gib", type=float, default=3.0)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "vae.json"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    results = {"cpu": [run_child(args, mode="decode"), run_child(args, mode="encode"),
                       run_child(args, mode="decode", latent_frames=2 * args.latent_frames),
                       run_child(args, mode="decode", height=2 * args.height, width=2 * args.width),
                       # the same doubled frame, tile="auto" under the budget the base size needs untiled
                       run_child(args, mode="decode", height=2 * args.height, width=2 * args.width, tile="auto",
                                 budget=plan_tiles(VAEConfig(dim=args.dim), args.height, args.width,
                                                   DTYPES[args.dtype], "decode").estimate_bytes)]}
    results["plans_81x832x480_bf16"] = {
        f"{mode}_budget_{gib}GiB": plan_tiles(VAEConfig(), 480, 832, torch.bfloat16, mode, memory_budget=gib << 30,
                                              device="cuda").explanation
        for mode in ("decode", "encode") for gib in (3, 8, 24)}
    if torch.cuda.is_available():
        results.update(cuda_81_frames(args.cuda_budget_gib))
    else:
        results["cuda"] = "not measured: no CUDA device"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
