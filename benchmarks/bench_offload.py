"""Block-swap benchmark: the full-size 14B DiT (random fp8 e4m3fn weights) on a simulated 24 GB card.

    python benchmarks/bench_offload.py                       # GPU; writes benchmarks/results/offload_gpu.json
    python benchmarks/bench_offload.py --dry-run             # CPU, tiny model: checks the script itself

What it measures, at 832x480x81 with two guidance passes per step:
  1. all-resident: the whole DiT placed on the GPU (no memory cap): seconds/step, and the forward's TFLOP/s
     (analytic FLOP count of the transformer blocks) against the card's dense bf16 rate;
  2. block swap: ``torch.cuda.set_per_process_memory_fraction`` caps the allocator at a 24 GB card (minus the
     CUDA context), ``plan_memory`` picks blocks to swap / batching, then seconds/step and peak allocated; and the
     same with ``--force-swap`` blocks swapped (fp8 fits a 24 GB card all-resident, so this times the streaming);
  3. VAE decode of 81 frames at 832x480 with the DiT still placed, tiled as the plan says: peak and seconds.
Targets (issue): peak <= 22.5 GB, swap seconds/step <= 1.2x all-resident, all-resident >= 50 % of dense bf16.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from steadydancer_core import (  # noqa: E402
    DiTConfig,
    JobShape,
    ModelSizes,
    Offloader,
    OffloadRequest,
    SteadyDancerDiT,
    VAEConfig,
    WanVAE,
    dit_tokens,
    empty_init,
    load_state_dict_into,
    module_bytes,
    plan_memory,
)

GIB = 1 << 30
GB = 1e9
# Dense bf16 tensor-core rates (TFLOP/s, no sparsity) by device-name fragment; --peak-tflops overrides.
DENSE_BF16_TFLOPS = (("H200", 989.4), ("H100 SXM", 989.4), ("H100 80GB HBM3", 989.4), ("H100 NVL", 835.0),
                     ("H100 PCIe", 756.0), ("H100", 756.0), ("A100", 312.0), ("L40S", 362.0), ("4090", 165.2),
                     ("3090", 71.0))
TEXT_TOKENS = 64
TARGET_PEAK_GB, TARGET_SWAP_RATIO, TARGET_MFU = 22.5, 1.2, 0.5


class RandomWeights(Mapping):
    """A lazy state dict of random weights for ``model`` (built on meta): block linears fp8 e4m3fn, the rest in
    ``dtype``; generated on ``device`` (fast) and returned on the CPU. Computed buffers keep their values."""

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype, seed: int = 0):
        self.params = dict(model.named_parameters())
        self.buffers = dict(model.named_buffers())
        linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        self.fp8 = {f"{n}.weight" for n in linears if n.startswith("blocks.")}
        self.device, self.dtype = device, dtype
        self.generator = torch.Generator(device).manual_seed(seed)

    def __iter__(self):
        return iter(list(self.params) + list(self.buffers))

    def __len__(self):
        return len(self.params) + len(self.buffers)

    def shape_of(self, key):
        return (self.params.get(key) if key in self.params else self.buffers[key]).shape

    def __getitem__(self, key):
        if key in self.buffers:
            return self.buffers[key]
        shape = self.params[key].shape
        fan_in = 1
        for size in shape[1:]:
            fan_in *= size
        scale = 1.0 / max(1, fan_in) ** 0.5
        t = torch.randn(shape, generator=self.generator, device=self.device, dtype=torch.float32) * scale
        if key.endswith(".weight") and len(shape) == 1:
            t = t.abs() + 1.0                                    # norm gains near 1
        return (t.to(torch.float8_e4m3fn) if key in self.fp8 else t.to(self.dtype)).cpu()


def build_dit(config: DiTConfig, device: torch.device, dtype: torch.dtype) -> SteadyDancerDiT:
    with empty_init():
        model = SteadyDancerDiT(config)
    load_state_dict_into(model, RandomWeights(model, device, dtype), compute_dtype=dtype, what="benchmark DiT")
    return model.eval()


def make_inputs(config: DiTConfig, width: int, height: int, frames: int, batch: int, device, dtype) -> tuple:
    f, h, w = 1 + (frames - 1) // 4, height // 8, width // 8
    g = torch.Generator("cpu").manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g).to(device=device, dtype=dtype)  # noqa: E731
    return (r(batch, config.out_dim, f, h, w), torch.full((batch,), 500, device=device),
            r(batch, min(TEXT_TOKENS, config.text_len), config.text_dim), r(batch, config.y_channels, f, h, w),
            r(batch, config.condition_channels, f, h, w), r(batch, config.in_dim, 1, h, w),
            r(batch, config.condition_channels, 1, h, w), r(batch, config.clip_tokens, config.clip_dim),
            r(batch, config.clip_tokens, config.clip_dim))


def forward_flops(config: DiTConfig, tokens: int, batch: int) -> float:
    """Matmul FLOPs of the transformer blocks of one forward (the embeddings and head are < 0.1 %)."""
    d, ffn, ctx = config.dim, config.ffn_dim, config.text_len + config.clip_tokens
    linear = 2 * tokens * (4 * d * d + 2 * d * d + 2 * d * ffn) + 2 * ctx * 4 * d * d
    attention = 4 * tokens * tokens * d + 4 * tokens * ctx * d
    return float(batch * config.num_layers * (linear + attention))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(model, inputs_b2, inputs_b1, batched: bool, steps: int, device) -> list:
    """Seconds per sampling step (two guidance passes: one batched forward, or two forwards)."""
    times = []
    with torch.inference_mode():
        for i in range(steps + 1):                       # the first step is a warm-up
            sync(device)
            start = time.perf_counter()
            if batched:
                model(*inputs_b2)
            else:
                model(*inputs_b1)
                model(*inputs_b1)
            sync(device)
            if i:
                times.append(time.perf_counter() - start)
    return times


def run_plan(model, plan, device, b2, b1, steps: int, resident: dict) -> tuple[Offloader, dict]:
    """Place the DiT per ``plan`` and time sampling steps; returns the offloader (the DiT stays placed)."""
    off = Offloader(device) if device.type == "cuda" else Offloader.simulated()
    off.place(model, "dit", plan.blocks_to_swap, plan.prefetch, plan.offload_embeddings)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with off.guard(plan, "the block-swap benchmark"):
        times = time_steps(model, b2, b1, plan.batch_passes, steps, device)
    ref = resident["batched" if plan.batch_passes else "sequential"]["seconds_per_step"]
    return off, {"blocks_to_swap": plan.blocks_to_swap, "batch_passes": plan.batch_passes,
                 "seconds_per_step": min(times), "all_steps": times, "ratio_to_all_resident": min(times) / ref,
                 "peak_allocated_gb": torch.cuda.max_memory_allocated(device) / GB if device.type == "cuda" else None,
                 "ledger_clean": off.ledger.is_clean()}


def peak_rate(device, override: float | None) -> tuple[float | None, str]:
    if override:
        return override, "given"
    if device.type != "cuda":
        return None, "cpu"
    name = torch.cuda.get_device_name(device)
    for fragment, rate in DENSE_BF16_TFLOPS:
        if fragment in name:
            return rate, name
    return None, name


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--card-gb", type=float, default=24.0, help="simulated card size (GiB)")
    ap.add_argument("--force-swap", type=int, default=20,
                    help="also time this many swapped blocks under the same cap (0 = skip)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 rate of the card")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "offload_gpu.json"))
    ap.add_argument("--dry-run", action="store_true", help="tiny model on the CPU (checks the script only)")
    args = ap.parse_args(argv)
    if args.dry_run:
        device, config, dtype = torch.device("cpu"), DiTConfig.tiny(num_layers=4), torch.float32
        args.width, args.height, args.frames, args.steps = 64, 32, 9, 1
    elif not torch.cuda.is_available():
        print("bench_offload needs a CUDA GPU (use --dry-run to check the script on the CPU)")
        return 2
    else:
        device, config, dtype = torch.device("cuda", torch.cuda.current_device()), DiTConfig(), torch.bfloat16
    results = {"command": " ".join(["python", "benchmarks/bench_offload.py", *(argv or sys.argv[1:])]),
               "torch": torch.__version__, "python": platform.python_version(), "dry_run": args.dry_run,
               "size": [args.width, args.height, args.frames], "guidance_passes": 2}
    if device.type == "cuda":
        free0, total = torch.cuda.mem_get_info(device)
        results["device"] = torch.cuda.get_device_name(device)
        context = total - free0                                  # CUDA context etc., outside the allocator
    else:
        total, context, results["device"] = 0, 0, "cpu (dry run)"

    t0 = time.perf_counter()
    model = build_dit(config, device, dtype)
    per_block = max(module_bytes(b) for b in model.blocks)
    blocks_total = sum(module_bytes(b) for b in model.blocks)
    other = module_bytes(model) - blocks_total
    embedding = module_bytes(model.text_embedding) + module_bytes(model.img_emb)
    results["weights"] = {"total_gb": module_bytes(model) / GB, "per_block_gb": per_block / GB,
                          "blocks": config.num_layers, "build_seconds": time.perf_counter() - t0}
    tokens = dit_tokens(config, args.width, args.height, args.frames)
    b2 = make_inputs(config, args.width, args.height, args.frames, 2, device, dtype)
    b1 = tuple(t[:1] for t in b2)

    # 1. all resident (no cap)
    off = Offloader(device) if device.type == "cuda" else Offloader.simulated()
    off.place(model, "dit")
    resident = {}
    for batched in (True, False):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = time_steps(model, b2, b1, batched, args.steps, device)
        sec = min(times)
        rate = forward_flops(config, tokens, 2) / sec / 1e12
        resident["batched" if batched else "sequential"] = {
            "seconds_per_step": sec, "all_steps": times, "tflops": rate,
            "peak_allocated_gb": torch.cuda.max_memory_allocated(device) / GB if device.type == "cuda" else None}
    peak, peak_name = peak_rate(device, args.peak_tflops)
    best = max(v["tflops"] for v in resident.values())
    resident["dense_bf16_tflops"], resident["rate_source"] = peak, peak_name
    resident["fraction_of_dense_bf16"] = best / peak if peak else None
    results["all_resident"] = resident
    off.unplace(model)

    # 2. simulated card with block swap
    card = int(args.card_gb * GIB)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(max(0.01, (card - context) / total), device)
        free = card - context
    else:
        free = card
    vae_config = VAEConfig.tiny() if args.dry_run else VAEConfig()
    sizes = ModelSizes(per_block, config.num_layers, other, embedding_bytes=embedding, dtype=dtype, dit_config=config,
                       vae_config=vae_config)
    job = JobShape(args.width, args.height, args.frames, 2)
    plan = plan_memory(free, sizes, job, OffloadRequest(blocks_to_swap=2 if args.dry_run else "auto"),
                       device=str(device))
    results["plan"] = plan.to_dict()
    if args.force_swap:
        # the streaming overhead itself: a fixed number of swapped blocks under the same cap
        forced_request = OffloadRequest(blocks_to_swap=min(args.force_swap, config.num_layers),
                                        batch_passes=plan.batch_passes)
        forced = plan_memory(free, replace(sizes, vae_config=None), job, forced_request, device=str(device))
        off, results["block_swap_forced"] = run_plan(model, forced, device, b2, b1, args.steps, resident)
        off.unplace(model)
    off, swap = run_plan(model, plan, device, b2, b1, args.steps, resident)
    results["block_swap"] = swap

    # 3. VAE decode, DiT still placed

    with empty_init():
        vae = WanVAE(vae_config)
    vae_sd = RandomWeights(vae, device, torch.float32 if device.type == "cpu" else torch.bfloat16, seed=2)
    vae_sd.fp8 = set()
    load_state_dict_into(vae, vae_sd, compute_dtype=torch.float32, what="benchmark VAE")
    latent = torch.randn(1, 16, 1 + (args.frames - 1) // 4, args.height // 8, args.width // 8)
    with off.resident(vae.eval(), "vae"), torch.inference_mode():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        start = time.perf_counter()
        video = vae.decode(latent.to(device), tile=plan.vae_tile if plan.vae_tile is not None else 0)
        sync(device)
        results["vae_decode"] = {
            "seconds": time.perf_counter() - start, "tile": plan.vae_tile, "frames": int(video.shape[2]),
            "peak_allocated_gb": torch.cuda.max_memory_allocated(device) / GB if device.type == "cuda" else None}
    off.unplace(model)

    results["targets"] = {
        "peak_allocated_gb<=22.5": None if swap["peak_allocated_gb"] is None
        else swap["peak_allocated_gb"] <= TARGET_PEAK_GB,
        "swap_ratio<=1.2": swap["ratio_to_all_resident"] <= TARGET_SWAP_RATIO,
        "forced_swap_ratio<=1.2": results["block_swap_forced"]["ratio_to_all_resident"] <= TARGET_SWAP_RATIO
        if "block_swap_forced" in results else None,
        "resident>=50%_dense_bf16": None if resident["fraction_of_dense_bf16"] is None
        else resident["fraction_of_dense_bf16"] >= TARGET_MFU,
    }
    out = Path(args.out) if not args.dry_run else Path(args.out).with_name("offload_dry_run.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    keys = ("device", "plan", "all_resident", "block_swap", "block_swap_forced", "vae_decode", "targets")
    print(json.dumps({k: results.get(k) for k in keys}, indent=2, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
