"""GPU suite part ``rank_share``: one rank's work in a multi-GPU job, measured on one GPU.

The full-size random-weight DiT (bf16) at 832x480x81, one guidance pass (120 prompt tokens), with its blocks run as
one rank of an n-way sequence-parallel group (n = 1, 2, 4, 8: the rank's 1/n of the tokens, attention over the
whole sequence with 40/n heads) through ``LoopbackSequenceParallel``: the exchanges hand back the rank's own data
where the other ranks' would arrive, so the shapes and the arithmetic are a real rank's and no second GPU is needed
(the values are not a real rank's). Reported per n: seconds per forward, peak GiB, compute speed-up over n = 1, and
the bytes one rank would send per pass (q / k / v all-to-alls and the final gather), from which the exchange time
on a given link follows (bytes / bandwidth). Also the step time this projects for the default guidance (91 passes
in 40 steps) on 1, 2 and 3 guidance groups: seconds per forward x the busiest group's passes, communication
excluded.

    python benchmarks/gpu/rank_share.py [--splits 1,2,4,8] [--repeats 1]
"""
from __future__ import annotations

import sys

import torch
from common import REPO, TEXT_TOKENS, peak_gib, reset_peak, run_part, timed

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_dit  # noqa: E402  (make_inputs)

import steadydancer_core as sd  # noqa: E402

FULL_LATENT = (21, 60, 104)         # 832x480, 81 frames
TINY_LATENT = (3, 4, 6)
SPLITS = (1, 2, 4, 8)
DEFAULT_STEPS = 40


def add_args(p):
    p.add_argument("--splits", default=",".join(map(str, SPLITS)), help="sequence-parallel degrees to measure")


def body(args, device):
    config = sd.DiTConfig.tiny(num_heads=8, dim=128) if args.tiny else sd.DiTConfig()
    latent = TINY_LATENT if args.tiny else FULL_LATENT
    splits = [int(v) for v in args.splits.split(",") if v]
    valid = (1,) + sd.valid_sequence_degrees(config.num_heads)
    bad = [n for n in splits if n not in valid]
    if bad:
        raise ValueError(f"splits {bad} do not divide the {config.num_heads} heads; valid: {valid}")
    dtype = torch.bfloat16
    inputs = bench_dit.make_inputs(config, latent, min(TEXT_TOKENS, config.text_len), device=device, dtype=dtype)
    model = sd.random_dit(config, device, dtype)
    result = {"latent": list(latent), "dim": config.dim, "heads": config.num_heads, "layers": config.num_layers,
              "text_tokens": TEXT_TOKENS, "splits": {}}
    for n in splits:
        exchange = None
        if n > 1:
            exchange = sd.LoopbackSequenceParallel(n)
            exchange.attach(model)
        try:
            reset_peak(device)
            with torch.inference_mode(), model.caching_context():
                t = timed(lambda: model(**inputs), device, args.repeats)
            traffic = dict(exchange.traffic) if exchange is not None else {"all_to_all": 0, "all_gather": 0}
            calls = 1 + max(1, args.repeats)
            result["splits"][str(n)] = dict(t, peak_gib=peak_gib(device),
                                            bytes_per_pass={k: v // calls for k, v in traffic.items()})
        except torch.OutOfMemoryError as err:
            result["splits"][str(n)] = {"status": f"failed: out of memory ({err})"}
        finally:
            if exchange is not None:
                exchange.detach(model)
    base = result["splits"].get("1", {}).get("seconds")
    guidance = sd.GenerationSettings().guidance
    passes = {g: sd.busiest_group_passes(guidance, DEFAULT_STEPS, g) for g in sd.GUIDANCE_DEGREES}
    result["busiest_group_passes"] = passes
    parts = []
    for n, row in result["splits"].items():
        if "seconds" not in row:
            parts.append(f"{n}-way {row['status']}")
            continue
        row["compute_speedup"] = base / row["seconds"] if base else None
        row["projected_denoise_seconds"] = {g: row["seconds"] * p for g, p in passes.items()}
        sent = sum(row["bytes_per_pass"].values()) / 2 ** 30
        speed = f" (x{row['compute_speedup']:.2f})" if row["compute_speedup"] else ""
        peak = f", peak {row['peak_gib']:.1f} GiB" if row["peak_gib"] is not None else ""
        parts.append(f"{n}-way {row['seconds']:.2f} s{speed}{peak}, sends {sent:.2f} GiB/pass")
    result["summary"] = "; ".join(parts)
    if not any("seconds" in row for row in result["splits"].values()):
        result["status"] = "failed: no split ran"
    return result


if __name__ == "__main__":
    raise SystemExit(run_part("rank_share", __doc__, body, add_args))
