"""The DiT's context cache (``SteadyDancerDiT.caching_context``): per-step forward time with and without it.

CPU, the mid config of bench_dit.py (dim 512, 4 layers, latent 5x16x16, fp32), a sampling step as the pipeline
runs it: the two guidance passes batched (prompt 60 tokens, negative prompt 100), a new latent and timestep every
step. The cached forwards reuse the embedded context and every block's cross-attention K/V (computed at the first
step); the outputs are checked to be bit-identical. Also the arithmetic share of the cached work in one 14B
forward at 832x480x81, and the cache's size there.

Writes benchmarks/results/context_cache.json.
    python benchmarks/bench_context_cache.py [--repeats 9] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_dit  # noqa: E402

from steadydancer_core import DiTConfig, SteadyDancerDiT  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
TEXT_TOKENS = (60, 100)          # prompt, negative prompt


def step_inputs(config: DiTConfig, step: int) -> dict:
    """Batched [cond | uncond] inputs of sampling step ``step``: same contexts every step, new latent and t."""
    one = bench_dit.make_inputs(config, bench_dit.MID_LATENT, TEXT_TOKENS[0])
    g = torch.Generator().manual_seed(100)
    contexts = [torch.randn(n, config.text_dim, generator=g) for n in TEXT_TOKENS]
    two = {k: v.expand(2, *v.shape[1:]) for k, v in one.items() if k != "t"}
    x = torch.randn(one["x"].shape, generator=torch.Generator().manual_seed(step))
    return dict(two, x=x.expand(2, *x.shape[1:]), t=torch.tensor([999 - 25 * step]), context=contexts)


def context_flops(config: DiTConfig, text_rows: int, batch: int = 1) -> float:
    """FLOPs the cache saves per forward: text + CLIP embeddings and every block's cross-attention K/V."""
    d, c = config.dim, config.clip_tokens
    embed = 2 * text_rows * (config.text_dim * d + d * d) + 2 * 2 * c * (config.clip_dim ** 2 + config.clip_dim * d)
    kv = config.num_layers * 2 * 2 * (c + text_rows) * d * d
    return batch * (embed + kv)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=9, help="timed steps (after one warm-up step)")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = DiTConfig(**bench_dit.MID_CONFIG)
    model = SteadyDancerDiT(config).eval()
    bench_dit.randomise(model)
    steps = [step_inputs(config, s) for s in range(args.repeats + 1)]
    times = {"uncached": ([], []), "cached": ([], [])}
    exact = True
    with torch.inference_mode(), model.caching_context() as cache:
        for s, inputs in enumerate(steps):
            for name in ("uncached", "cached"):               # interleaved: fair under background load
                if name == "uncached":
                    model.context_cache = None
                else:
                    model.context_cache = cache
                wall, cpu = time.perf_counter(), time.process_time()
                out = model(**inputs)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                if s:
                    times[name][0].append(wall)
                    times[name][1].append(cpu)
                if name == "uncached":
                    reference = out
                else:
                    exact = exact and torch.equal(out, reference)
        cache_bytes = cache.nbytes()
        hits, misses = cache.hits, cache.misses
    result = dict(config=bench_dit.MID_CONFIG, latent=list(bench_dit.MID_LATENT), text_tokens=list(TEXT_TOKENS),
                  batch=2, dtype="float32", threads=torch.get_num_threads(), torch=torch.__version__,
                  machine=platform.processor() or platform.machine(), repeats=args.repeats,
                  load_average_1min=os.getloadavg()[0],
                  bit_identical=exact, cache_bytes=cache_bytes, cache_hits=hits, cache_misses=misses)
    for name, (wall, cpu) in times.items():
        result[name] = dict(seconds=statistics.median(wall), min_seconds=min(wall),
                            cpu_seconds=statistics.median(cpu), all_seconds=wall)
    u, c = result["uncached"], result["cached"]
    result["saving_wall_median"] = 1 - c["seconds"] / u["seconds"]
    result["saving_cpu_median"] = 1 - c["cpu_seconds"] / u["cpu_seconds"]
    big, tokens = DiTConfig(), 150
    full = bench_dit.forward_flops(big, bench_dit.GPU_LATENT)
    result["full_size_14b"] = dict(
        latent=list(bench_dit.GPU_LATENT), prompt_tokens=tokens,
        saved_share_of_forward_flops=context_flops(big, tokens + 1) / full,
        cache_gb_per_pass=(big.clip_tokens + tokens + 1) * big.dim * 2 * (1 + 2 * big.num_layers) / 1e9)
    mid = context_flops(config, TEXT_TOKENS[1] + 1, 2) / (2 * bench_dit.forward_flops(config, bench_dit.MID_LATENT))
    result["mid_saved_share_of_nominal_flops"] = mid
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "context_cache.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"uncached {u['seconds']:.4f} s, cached {c['seconds']:.4f} s per batched step (median of {args.repeats}; "
          f"CPU {u['cpu_seconds']:.4f} / {c['cpu_seconds']:.4f} s): saving {result['saving_wall_median']:.1%} wall, "
          f"{result['saving_cpu_median']:.1%} CPU; bit-identical {exact}; cache {cache_bytes / 2**20:.1f} MiB")
    f = result["full_size_14b"]
    print(f"14B at 832x480x81, {tokens}-token prompt: the cached work is {f['saved_share_of_forward_flops']:.2%} of a "
          f"forward's FLOPs; cache {f['cache_gb_per_pass']:.2f} GB per guidance pass")
    return result


if __name__ == "__main__":
    main()
