"""GPU proof part ``compile``: the regional ``torch.compile`` of the DiT blocks (loader option ``compile``) on the
full-size random-weight bf16 DiT at 832x480x81: compile time (first compiled forward minus an eager one), seconds
per forward compiled and eager, and the compiled output's difference from eager. A failed compile (no triton, an
inductor error) shows as status "eager: ..." with the reason, as the loader would log it.

    python3 benchmarks/gpu/compile.py [--repeats 1] [--backend inductor]
"""
from __future__ import annotations

import sys

import torch
from common import REPO, TEXT_TOKENS, dense_bf16_rate, run_part, timed

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_dit  # noqa: E402

import steadydancer_core as sd  # noqa: E402

FULL_LATENT, TINY_LATENT = (21, 60, 104), (3, 4, 6)


def add_args(p):
    p.add_argument("--backend", default="inductor")
    p.add_argument("--mode", default=None, help="torch.compile mode (default: its default)")


def body(args, device):
    config = sd.DiTConfig.tiny() if args.tiny else sd.DiTConfig()
    latent = TINY_LATENT if args.tiny else FULL_LATENT
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = sd.random_dit(config, device, dtype)
    inputs = bench_dit.make_inputs(config, latent, min(TEXT_TOKENS, config.text_len), device=device, dtype=dtype)
    flops = bench_dit.forward_flops(config, latent)
    outputs = {}
    with torch.inference_mode():
        eager = timed(lambda: outputs.__setitem__("eager", model(**inputs)), device, args.repeats)
        rc = sd.compile_blocks(model, backend=args.backend, mode=args.mode)
        compiled = timed(lambda: outputs.__setitem__("compiled", model(**inputs)), device, args.repeats)
    reference = outputs["eager"].double()
    diff = outputs["compiled"].double() - reference
    rate = dense_bf16_rate(args)
    result = {"latent": list(latent), "dtype": str(dtype), "backend": args.backend, "mode": args.mode,
              "compile_status": rc.status, "eager": eager, "compiled": compiled,
              "compile_seconds": compiled["first_call_seconds"] - eager["seconds"],
              "speedup": eager["seconds"] / compiled["seconds"],
              "tflops_compiled": flops / compiled["seconds"] / 1e12,
              "fraction_of_dense_bf16": flops / compiled["seconds"] / 1e12 / rate if rate else None,
              "max_abs_diff": float(diff.abs().max()),
              "rel_l2_diff": float(diff.norm() / reference.norm().clamp(min=1e-30))}
    result["summary"] = (f"{rc.status}: compile {result['compile_seconds']:.1f} s; {compiled['seconds']:.2f} s vs "
                         f"eager {eager['seconds']:.2f} s ({result['speedup']:.2f}x); max |diff| "
                         f"{result['max_abs_diff']:.2g}, rel. L2 {result['rel_l2_diff']:.2g}")
    if rc.status != "compiled":
        result["status"] = f"failed: compile fell back to {rc.status}"
    return result


if __name__ == "__main__":
    raise SystemExit(run_part("compile", __doc__, body, add_args))
