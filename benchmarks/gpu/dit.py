"""GPU suite part ``dit``: the full-size random-weight DiT forward at 832x480x81 (one guidance pass, 120 prompt
tokens): seconds, peak GiB and achieved TFLOP/s (nominal FLOPs of the official forward, ``bench_dit.forward_flops``)
against the dense bf16 rate the ``matmul`` part measured, for

  bf16                 dense bf16 weights
  bf16_context_cache   the same, inside ``caching_context`` (context projections reused from the previous step)
  fp8_upcast           block linears float8_e4m3fn (scaled per tensor), upcast to bf16 per layer
  fp8_scaled_mm        the same weights multiplied in fp8 (``torch._scaled_mm``; loader option ``fp8_matmul``)

The models are built on the meta device and materialised on the GPU (``random_dit``); fp8 by casting there.

    python benchmarks/gpu/dit.py [--variants bf16,fp8_upcast] [--repeats 2]
"""
from __future__ import annotations

import sys

import torch
from common import (
    REPO,
    TEXT_TOKENS,
    Skip,
    dense_bf16_rate,
    peak_gib,
    reset_peak,
    run_part,
    timed,
)

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_dit  # noqa: E402  (forward_flops, make_inputs)

import steadydancer_core as sd  # noqa: E402

VARIANTS = ("bf16", "bf16_context_cache", "fp8_upcast", "fp8_scaled_mm")
FULL_LATENT = (21, 60, 104)         # 832x480, 81 frames
TINY_LATENT = (3, 4, 6)


def enable_fp8_matmul(model, device) -> str:
    """Switch the fp8 layers of ``model`` to fp8 matmul, as the loader option ``fp8_matmul=True`` does; returns its
    report. Raises Skip on a device where every layer stays on the upcast path."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
        raise Skip(f"fp8 matmul needs a GPU of compute capability 8.9+, not {device}")
    return str(sd.set_fp8_matmul(model, True, device))


def measure(model, inputs, device, repeats: int, flops: float, rate, cache: bool = False) -> dict:
    reset_peak(device)
    with torch.inference_mode():
        if cache:
            with model.caching_context():
                t = timed(lambda: model(**inputs), device, repeats)
        else:
            t = timed(lambda: model(**inputs), device, repeats)
    tflops = flops / t["seconds"] / 1e12
    return dict(t, peak_gib=peak_gib(device), weights_gib=sd.module_bytes(model) / 2 ** 30, tflops=tflops,
                fraction_of_dense_bf16=tflops / rate if rate else None)


def add_args(p):
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")


def body(args, device):
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    config = sd.DiTConfig.tiny() if args.tiny else sd.DiTConfig()
    latent = TINY_LATENT if args.tiny else FULL_LATENT
    dtype = torch.bfloat16
    flops = bench_dit.forward_flops(config, latent)
    rate = dense_bf16_rate(args)
    inputs = bench_dit.make_inputs(config, latent, min(TEXT_TOKENS, config.text_len), device=device, dtype=dtype)
    result = {"latent": list(latent), "layers": config.num_layers, "dim": config.dim, "text_tokens": TEXT_TOKENS,
              "nominal_tflop": flops / 1e12, "dense_bf16_tflops": rate, "variants": {}}
    for weights in ("dense", "fp8"):
        wanted = [v for v in variants if v.startswith("bf16" if weights == "dense" else "fp8")]
        if not wanted:
            continue
        model = sd.random_dit(config, device, dtype, weights=weights)
        for name in wanted:
            try:
                extra = {}
                if name == "fp8_scaled_mm":
                    extra["fp8_matmul"] = enable_fp8_matmul(model, device)
                res = measure(model, inputs, device, args.repeats, flops, rate, cache=name.endswith("cache"))
                result["variants"][name] = dict(res, **extra)
            except Skip as why:
                result["variants"][name] = {"status": f"skipped: {why}"}
            except Exception as err:   # one variant failing does not lose the others
                result["variants"][name] = {"status": f"failed: {type(err).__name__}: {err}"}
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    parts = []
    for name, v in result["variants"].items():
        if "seconds" in v:
            frac = f" ({v['fraction_of_dense_bf16']:.0%} of dense)" if v["fraction_of_dense_bf16"] else ""
            peak = f", peak {v['peak_gib']:.1f} GiB" if v["peak_gib"] is not None else ""
            parts.append(f"{name} {v['seconds']:.2f} s{peak}, {v['tflops']:.3g} TFLOP/s{frac}")
        else:
            parts.append(f"{name} {v['status']}")
    result["summary"] = "; ".join(parts)
    if not any("seconds" in v for v in result["variants"].values()):
        result["status"] = "failed: no variant ran"
    return result


if __name__ == "__main__":
    raise SystemExit(run_part("dit", __doc__, body, add_args))
