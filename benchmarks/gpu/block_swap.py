"""GPU suite part ``block_swap``: the full-size DiT (fp8 and bf16 random weights) at 832x480x81 with two guidance
passes per step, on a simulated 24 GB card: ``torch.cuda.set_per_process_memory_fraction`` caps the allocator at
the card minus this GPU's CUDA context, the planner (``plan_memory``) picks blocks to swap and batching from that
free memory, and the step runs under the cap. Reported per weights: the plan, peak allocated, seconds per step,
and the ratio to the same step all-resident (measured first, without the cap). Targets (issue): peak <= 22.5 GB,
swap step <= 1.2x all-resident.

    python benchmarks/gpu/block_swap.py [--card-gib 24] [--weights fp8,bf16] [--repeats 1]
"""
from __future__ import annotations

import sys

import torch
from common import FULL_SIZE, GIB, REPO, TEXT_TOKENS, peak_gib, reset_peak, run_part, timed

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_dit  # noqa: E402

import steadydancer_core as sd  # noqa: E402

TINY_SIZE = (48, 32, 9)
TARGET_PEAK_GB, TARGET_RATIO = 22.5, 1.2


def step_fn(model, b2: dict, batched: bool):
    b1 = {k: (v[:1] if k != "t" else v) for k, v in b2.items()}

    def step():
        with torch.inference_mode():
            if batched:
                model(**b2)
            else:
                model(**b1)
                model(**dict(b1, context=b2["context"][1:]))
    return step


def inputs(config, size, device, dtype) -> dict:
    width, height, frames = size
    latent = (1 + (frames - 1) // 4, height // 8, width // 8)
    one = bench_dit.make_inputs(config, latent, min(TEXT_TOKENS, config.text_len), device=device, dtype=dtype)
    two = {k: (v.expand(2, *v.shape[1:]) if k != "t" else v) for k, v in one.items()}
    two["context"] = torch.cat([one["context"], one["context"].flip(1)])      # two different prompts
    return two


def one_weights(args, device, weights: str) -> dict:
    config = sd.DiTConfig.tiny(num_layers=6) if args.tiny else sd.DiTConfig()
    size = TINY_SIZE if args.tiny else FULL_SIZE
    dtype = torch.bfloat16
    model = sd.random_dit(config, device, dtype, weights="fp8" if weights == "fp8" else "dense")
    blocks = list(model.blocks)
    per_block = max(sd.module_bytes(b) for b in blocks)
    other = sd.module_bytes(model) - sum(sd.module_bytes(b) for b in blocks)
    embedding = sd.module_bytes(model.text_embedding) + sd.module_bytes(model.img_emb)
    sizes = sd.ModelSizes(per_block, len(blocks), other, embedding_bytes=embedding, dtype=dtype, dit_config=config)
    job = sd.JobShape(*size, guidance_passes=2)
    if device.type == "cuda":
        free0, total = torch.cuda.mem_get_info(device)
        context = total - free0 - torch.cuda.memory_reserved(device)      # CUDA context, outside the allocator
        free = int(args.card_gib * GIB) - context
    else:
        free = other + len(blocks) * per_block // 2 + (64 << 20)          # tiny: room for about half the blocks
    plan = sd.plan_memory(free, sizes, job, sd.OffloadRequest(), device=str(device))
    b2 = inputs(config, size, device, dtype)
    step = step_fn(model, b2, plan.batch_passes)

    resident = sd.Offloader(device) if device.type == "cuda" else sd.Offloader.simulated()
    resident.place(model, "dit")
    reset_peak(device)
    all_resident = dict(timed(step, device, args.repeats), peak_gib=peak_gib(device))
    resident.unplace(model)

    off = sd.Offloader(device) if device.type == "cuda" else sd.Offloader.simulated(capacity_bytes=free)
    off.place(model, "dit", plan.blocks_to_swap, plan.prefetch, plan.offload_embeddings)
    reset_peak(device)
    if device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(min(1.0, max(0.01, free / total)), device)
    try:
        with off.guard(plan, "the block-swap benchmark"):
            swapped = dict(timed(step, device, args.repeats), peak_gib=peak_gib(device))
    finally:
        if device.type == "cuda":
            torch.cuda.set_per_process_memory_fraction(1.0, device)
    swapped.update(ledger_clean=off.ledger.is_clean(), ratio_to_all_resident=swapped["seconds"] /
                   all_resident["seconds"])
    off.unplace(model)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    peak_gb = None if swapped["peak_gib"] is None else swapped["peak_gib"] * GIB / 1e9
    return {"free_bytes": free, "plan": {k: v for k, v in plan.to_dict().items() if k != "suggestion"},
            "all_resident": all_resident, "block_swap": swapped,
            "targets": {"peak<=22.5GB": None if peak_gb is None else peak_gb <= TARGET_PEAK_GB,
                        "ratio<=1.2": swapped["ratio_to_all_resident"] <= TARGET_RATIO}}


def add_args(p):
    p.add_argument("--card-gib", type=float, default=24.0, help="simulated card memory (GiB)")
    p.add_argument("--weights", default="fp8,bf16", help="comma-separated: fp8, bf16")


def body(args, device):
    result, parts = {"size": list(TINY_SIZE if args.tiny else FULL_SIZE), "card_gib": args.card_gib}, []
    for weights in [w for w in args.weights.split(",") if w]:
        try:
            r = result[weights] = one_weights(args, device, weights)
            plan, swap = r["plan"], r["block_swap"]
            peak = f"peak {swap['peak_gib']:.1f} GiB, " if swap["peak_gib"] is not None else ""
            parts.append(f"{weights}: {plan['blocks_to_swap']} swapped, "
                         f"{'batched' if plan['batch_passes'] else 'one pass at a time'}, {peak}"
                         f"{swap['seconds']:.2f} s/step = {swap['ratio_to_all_resident']:.2f}x all-resident")
        except Exception as err:   # the other weights still run
            result[weights] = {"status": f"failed: {type(err).__name__}: {err}"}
            parts.append(f"{weights}: failed: {type(err).__name__}: {err}")
    result["summary"] = "; ".join(parts)
    return result


if __name__ == "__main__":
    raise SystemExit(run_part("block_swap", __doc__, body, add_args))
