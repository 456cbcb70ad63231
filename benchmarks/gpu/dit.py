"""GPU proof part ``dit``: the full-size random-weight DiT forward at 832x480x81 (one guidance pass, 120 prompt
tokens): seconds per pass, peak allocated / reserved memory and the CUDA context beside it, achieved TFLOP/s
(nominal FLOPs of the official forward, ``bench_dit.forward_flops``) against the dense bf16 rate the ``matmul``
part measured, for

  bf16                 dense bf16 weights
  fp8_upcast           the same random weights with the block linears rounded to float8_e4m3fn (scaled per
                       tensor), upcast to bf16 per layer (the default for an fp8 file)
  fp8_scaled_mm        the same fp8 weights multiplied in fp8 (``torch._scaled_mm``; loader option ``fp8_matmul``)
  bf16_context_cache   (on request) bf16 inside ``caching_context`` (context projections reused between steps)

and the output difference over the whole DiT between them (relative L2 and max |diff| of the same inputs):
fp8 upcast vs bf16, fp8 scaled-mm vs bf16, fp8 scaled-mm vs fp8 upcast. ``random_dit`` draws the fp8 model's
weights from the same seed as the bf16 one, so the fp8 model is the bf16 model rounded.

    python3 benchmarks/gpu/dit.py [--variants bf16,fp8_upcast,fp8_scaled_mm] [--repeats 2]
"""
from __future__ import annotations

import sys

import torch
from common import REPO, TEXT_TOKENS, Skip, dense_bf16_rate, memory, memory_text, reset_peak, run_part, timed

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_dit  # noqa: E402  (forward_flops, make_inputs)

import steadydancer_core as sd  # noqa: E402

VARIANTS = ("bf16", "fp8_upcast", "fp8_scaled_mm", "bf16_context_cache")
DEFAULT_VARIANTS = ("bf16", "fp8_upcast", "fp8_scaled_mm")
PAIRS = (("fp8_upcast", "bf16"), ("fp8_scaled_mm", "bf16"), ("fp8_scaled_mm", "fp8_upcast"))
FULL_LATENT = (21, 60, 104)         # 832x480, 81 frames
TINY_LATENT = (3, 4, 6)


def enable_fp8_matmul(model, device) -> str:
    """Switch the fp8 layers of ``model`` to fp8 matmul, as the loader option ``fp8_matmul=True`` does; returns its
    report. Raises Skip on a device where every layer stays on the upcast path."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
        raise Skip(f"fp8 matmul needs a GPU of compute capability 8.9+, not {device}")
    return str(sd.set_fp8_matmul(model, True, device))


def measure(model, inputs, device, repeats: int, flops: float, rate, outputs: dict, name: str,
            cache: bool = False) -> dict:
    """Time one variant; its last output goes to ``outputs[name]`` (float32, on the device)."""
    reset_peak(device)

    def forward():
        outputs[name] = model(**inputs)

    with torch.inference_mode():
        if cache:
            with model.caching_context():
                t = timed(forward, device, repeats)
        else:
            t = timed(forward, device, repeats)
    outputs[name] = outputs[name].float()
    tflops = flops / t["seconds"] / 1e12
    return dict(t, **memory(device), weights_gib=sd.module_bytes(model) / 2 ** 30, tflops=tflops,
                fraction_of_dense_bf16=tflops / rate if rate else None)


def differences(outputs: dict) -> dict:
    """Relative L2 and max |diff| between the variants' outputs (PAIRS that both ran)."""
    found = {}
    for a, b in PAIRS:
        if a in outputs and b in outputs:
            x, y = outputs[a].double(), outputs[b].double()
            found[f"{a}_vs_{b}"] = {"rel_l2": float((x - y).norm() / y.norm().clamp(min=1e-30)),
                                    "max_abs": float((x - y).abs().max()), "ref_max_abs": float(y.abs().max())}
    return found


def add_args(p):
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma-separated, of {', '.join(VARIANTS)}")


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
    outputs = {}
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
                res = measure(model, inputs, device, args.repeats, flops, rate, outputs, name,
                              cache=name.endswith("cache"))
                result["variants"][name] = dict(res, **extra)
            except Skip as why:
                result["variants"][name] = {"status": f"skipped: {why}"}
            except Exception as err:   # one variant failing does not lose the others
                result["variants"][name] = {"status": f"failed: {type(err).__name__}: {err}"}
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result["differences"] = differences(outputs)
    parts = []
    for name, v in result["variants"].items():
        if "seconds" in v:
            frac = f" ({v['fraction_of_dense_bf16']:.0%} of dense)" if v["fraction_of_dense_bf16"] else ""
            mem = memory_text(v)
            parts.append(f"{name} {v['seconds']:.2f} s/pass, {v['tflops']:.3g} TFLOP/s{frac}"
                         + (f", {mem}" if mem else ""))
        else:
            parts.append(f"{name} {v['status']}")
    parts += [f"{pair} rel. L2 {d['rel_l2']:.3g}" for pair, d in result["differences"].items()]
    result["summary"] = "; ".join(parts)
    failed = [name for name, v in result["variants"].items() if v.get("status", "").startswith("failed")]
    if failed:
        result["status"] = f"failed: variant {', '.join(failed)} failed (the others' figures are kept)"
    elif not any("seconds" in v for v in result["variants"].values()):
        result["status"] = "failed: no variant ran"
    return result


if __name__ == "__main__":
    raise SystemExit(run_part("dit", __doc__, body, add_args))
