"""GPU proof part ``matmul``: the card's dense bf16 matrix-product rate (the ceiling the DiT forward is held
against: the target is >= 50 % of it) and its ratio to ``REFERENCE_TFLOPS`` (the bf16 rate the lent H100 / H200
machines are stated to reach), and the fp8 ``torch._scaled_mm`` rate where the card has fp8.

    python3 benchmarks/gpu/matmul.py            # writes .gpu-proof/results/gpu_matmul.json
"""
from __future__ import annotations

import time

import torch
from common import run_part, sync

SIZE = 8192          # M = N = K: large enough to run at the card's peak, 3 warm-ups, 10 timed products
REFERENCE_TFLOPS = 790.0


def rate(fn, flops: float, device, repeats: int = 10) -> float:
    for _ in range(3):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return flops * repeats / (time.perf_counter() - start) / 1e12


def body(args, device):
    n = 256 if args.tiny else SIZE
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    g = torch.Generator(device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    flops = 2.0 * n ** 3
    result = {"size": n, "dtype": str(dtype), "bf16_tflops": rate(lambda: a @ b, flops, device),
              "reference_tflops": REFERENCE_TFLOPS}
    result["ratio_to_reference"] = result["bf16_tflops"] / REFERENCE_TFLOPS
    summary = (f"dense {str(dtype).replace('torch.', '')} {n}^3: {result['bf16_tflops']:.0f} TFLOP/s "
               f"= {result['ratio_to_reference']:.0%} of {REFERENCE_TFLOPS:.0f}")
    if device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9) and hasattr(torch, "_scaled_mm"):
        a8, b8 = a.to(torch.float8_e4m3fn), b.t().contiguous().to(torch.float8_e4m3fn).t()
        one = torch.ones((), device=device)
        try:
            result["fp8_tflops"] = rate(lambda: torch._scaled_mm(a8, b8, one, one, out_dtype=torch.bfloat16),
                                        flops, device)
            summary += f"; fp8 _scaled_mm: {result['fp8_tflops']:.0f} TFLOP/s"
        except RuntimeError as err:
            result["fp8_tflops"] = f"failed: {err}"
    result["summary"] = summary
    return result


if __name__ == "__main__":
    raise SystemExit(run_part("matmul", __doc__, body))
