"""GPU proof part ``block_swap``: the 14B DiT with fp8 random weights at 832x480x81, two guidance passes per step,
forced into block swap on a simulated 24 GB card.

How the card is simulated: the CUDA context (``total - free - reserved``, outside torch's allocator) is measured,
and ``torch.cuda.set_per_process_memory_fraction`` caps the allocator at ``card - context``, so an allocation past
what a 24 GB card would hold fails with out-of-memory. The planner (``plan_memory``) is given that free memory
and a cap of ``22.5 GB - context`` (the target for the card's total use); it would keep every fp8 block resident
on a 24 GB card, so at least ``--min-swap`` blocks are forced to stream (``OffloadRequest(blocks_to_swap=N)``).

Reported: the plan, seconds per step all-resident (measured first, without the cap) and swapped, their ratio,
the peak reserved memory plus the context (the card's total use) against 22.5 GB, the blocks' bytes streamed per
pass, and the pinned / pageable host-to-device copy rate of 1 GiB. Targets: total use <= 22.5 GB, swapped step
<= 1.2x all-resident.

    python3 benchmarks/gpu/block_swap.py [--card-gib 24] [--min-swap 8] [--weights fp8,bf16] [--repeats 1]
"""
from __future__ import annotations

import sys
import time

import torch
from common import (
    FULL_SIZE,
    GB,
    GIB,
    REPO,
    TEXT_TOKENS,
    context_bytes,
    memory,
    memory_text,
    reset_peak,
    run_part,
    sync,
    timed,
)

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_dit  # noqa: E402

import steadydancer_core as sd  # noqa: E402

TINY_SIZE = (48, 32, 9)
TARGET_GB, TARGET_RATIO = 22.5, 1.2
COPY_BYTES = 1 << 30


def step_fn(model, b2: dict, batched: bool):
    """One sampling step: the two guidance passes, batched or one after the other; and one pass alone (warm-up)."""
    b1 = {k: (v[:1] if k != "t" else v) for k, v in b2.items()}

    def one_pass():
        with torch.inference_mode():
            model(**b1)

    def step():
        with torch.inference_mode():
            if batched:
                model(**b2)
            else:
                model(**b1)
                model(**dict(b1, context=b2["context"][1:]))
    return step, one_pass


def inputs(config, size, device, dtype) -> dict:
    width, height, frames = size
    latent = (1 + (frames - 1) // 4, height // 8, width // 8)
    one = bench_dit.make_inputs(config, latent, min(TEXT_TOKENS, config.text_len), device=device, dtype=dtype)
    two = {k: (v.expand(2, *v.shape[1:]) if k != "t" else v) for k, v in one.items()}
    two["context"] = torch.cat([one["context"], one["context"].flip(1)])      # two different prompts
    return two


def copy_rates(device) -> dict:
    """Host-to-device copy rate of 1 GiB, from pinned and from pageable memory (GB/s, best of 3)."""
    if device.type != "cuda":
        return {}
    dev = torch.empty(COPY_BYTES, dtype=torch.uint8, device=device)
    found = {}
    for name, pin in (("pinned", True), ("pageable", False)):
        host = torch.ones(COPY_BYTES, dtype=torch.uint8, pin_memory=pin)
        best = float("inf")
        for _ in range(3):
            sync(device)
            start = time.perf_counter()
            dev.copy_(host, non_blocking=pin)
            sync(device)
            best = min(best, time.perf_counter() - start)
        found[f"h2d_{name}_gbs"] = COPY_BYTES / best / GB
        del host
    del dev
    torch.cuda.empty_cache()
    return found


def model_sizes(model, config, dtype):
    blocks = list(model.blocks)
    per_block = max(sd.module_bytes(b) for b in blocks)
    other = sd.module_bytes(model) - sum(sd.module_bytes(b) for b in blocks)
    embedding = sd.module_bytes(model.text_embedding) + sd.module_bytes(model.img_emb)
    return sd.ModelSizes(per_block, len(blocks), other, embedding_bytes=embedding, dtype=dtype, dit_config=config)


def budgets(args, device, sizes) -> tuple[int, float | None, int | None]:
    """(free memory the planner sees, its cap in GiB, allocator cap in bytes) for the simulated card."""
    if device.type == "cuda":
        context = context_bytes(device)
        allocator_cap = int(args.card_gib * GIB) - context
        return allocator_cap, (TARGET_GB * GB - context) / GIB, allocator_cap
    free = sizes.other_bytes + sizes.n_blocks * sizes.block_bytes // 2 + (64 << 20)   # tiny: about half the blocks
    return free, None, None


def one_weights(args, device, weights: str) -> dict:
    config = sd.DiTConfig.tiny(num_layers=6) if args.tiny else sd.DiTConfig()
    size = TINY_SIZE if args.tiny else FULL_SIZE
    dtype = torch.bfloat16
    model = sd.random_dit(config, device, dtype, weights="fp8" if weights == "fp8" else "dense")
    sizes = model_sizes(model, config, dtype)
    job = sd.JobShape(*size, guidance_passes=2)
    b2 = inputs(config, size, device, dtype)

    resident = sd.Offloader(device) if device.type == "cuda" else sd.Offloader.simulated()
    resident.place(model, "dit")
    step_fn(model, b2, False)[1]()             # one pass first: the kernels and libraries the context holds load
    free, cap_gib, allocator_cap = budgets(args, device, sizes)
    chosen = sd.plan_memory(free, sizes, job, sd.OffloadRequest(max_vram_gb=cap_gib), device=str(device))
    forced = max(chosen.blocks_to_swap, min(args.min_swap, sizes.n_blocks))
    plan = sd.plan_memory(free, sizes, job, sd.OffloadRequest(blocks_to_swap=forced, max_vram_gb=cap_gib),
                          device=str(device))
    step, one_pass = step_fn(model, b2, plan.batch_passes)
    reset_peak(device)
    all_resident = dict(timed(step, device, args.repeats, warmup=lambda: None), **memory(device))
    resident.unplace(model)

    off = sd.Offloader(device) if device.type == "cuda" else sd.Offloader.simulated(capacity_bytes=free)
    off.place(model, "dit", plan.blocks_to_swap, plan.prefetch, plan.offload_embeddings)
    reset_peak(device)
    if allocator_cap is not None:
        total = torch.cuda.mem_get_info(device)[1]
        torch.cuda.set_per_process_memory_fraction(min(1.0, max(0.01, allocator_cap / total)), device)
    try:
        with off.guard(plan, "the block-swap benchmark"):
            swapped = dict(timed(step, device, args.repeats, warmup=one_pass), **memory(device))
    finally:
        if allocator_cap is not None:
            torch.cuda.set_per_process_memory_fraction(1.0, device)
    streamed = plan.blocks_to_swap * sizes.block_bytes
    swapped.update(ledger_clean=off.ledger.is_clean(),
                   ratio_to_all_resident=swapped["seconds"] / all_resident["seconds"],
                   streamed_gb_per_pass=streamed / GB,
                   streamed_gbs=streamed * (1 if plan.batch_passes else 2) / swapped["seconds"] / GB)
    off.unplace(model)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    use = swapped.get("device_use_gb")
    return {"allocator_cap_gib": None if allocator_cap is None else allocator_cap / GIB,
            "planner_cap_gib": cap_gib, "planner_choice_blocks": chosen.blocks_to_swap,
            "forced_blocks": plan.blocks_to_swap,
            "plan": {k: v for k, v in plan.to_dict().items() if k != "suggestion"},
            "all_resident": all_resident, "block_swap": swapped,
            "targets": {f"device_use<={TARGET_GB}GB": None if use is None else use <= TARGET_GB,
                        f"ratio<={TARGET_RATIO}": swapped["ratio_to_all_resident"] <= TARGET_RATIO}}


def add_args(p):
    p.add_argument("--card-gib", type=float, default=24.0, help="simulated card memory (GiB)")
    p.add_argument("--min-swap", type=int, default=8, help="blocks streamed at least (forced past the planner)")
    p.add_argument("--weights", default="fp8", help="comma-separated: fp8, bf16")


def describe(weights: str, r: dict) -> str:
    swap, plan = r["block_swap"], r["plan"]
    mem = memory_text(swap)
    return (f"{weights}: {plan['blocks_to_swap']} blocks swapped (planner: {r['planner_choice_blocks']}), "
            f"{swap['seconds']:.2f} s/step vs {r['all_resident']['seconds']:.2f} resident = "
            f"{swap['ratio_to_all_resident']:.2f}x" + (f", {mem}" if mem else ""))


def body(args, device):
    result = {"size": list(TINY_SIZE if args.tiny else FULL_SIZE), "card_gib": args.card_gib, "target_gb": TARGET_GB}
    result.update(copy_rates(device))
    parts = [f"H2D pinned {result['h2d_pinned_gbs']:.1f} GB/s"] if "h2d_pinned_gbs" in result else []
    failed = []
    for weights in [w for w in args.weights.split(",") if w]:
        if weights not in ("fp8", "bf16"):
            raise ValueError(f"unknown weights {weights!r}; choose fp8 or bf16")
        try:
            r = result[weights] = one_weights(args, device, weights)
            parts.append(describe(weights, r))
        except Exception as err:   # the other weights still run
            result[weights] = {"status": f"failed: {type(err).__name__}: {err}"}
            parts.append(f"{weights}: failed: {type(err).__name__}: {err}")
            failed.append(weights)
    result["summary"] = "; ".join(parts)
    if failed:
        result["status"] = f"failed: {', '.join(failed)} weights failed"
    return result


if __name__ == "__main__":
    raise SystemExit(run_part("block_swap", __doc__, body, add_args))
