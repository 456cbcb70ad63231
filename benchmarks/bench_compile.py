"""Regional torch.compile of the DiT blocks (loader option ``compile``; ``compile_blocks``) on the CPU.

The mid config of bench_dit.py (dim 512, 4 heads, 4 layers, ffn 1024, latent 5x16x16, 60 text tokens, fp32):
compile time (first compiled forward minus an eager forward), seconds per forward compiled and eager (timed
interleaved, median), and the compiled output's max abs difference from eager. The same script runs on a GPU
(``--device cuda``, bf16 by default there); the GPU suite's ``compile`` part does the full-size model.

Writes benchmarks/results/compile.json.
    python benchmarks/bench_compile.py [--repeats 9] [--threads N] [--backend inductor]
"""
from __future__ import annotations

import argparse
import copy
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

from steadydancer_core import DiTConfig, SteadyDancerDiT, compile_blocks  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--backend", default="inductor")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default=None, help="default: fp32 on CPU, bf16 on CUDA")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype or ("fp32" if device.type == "cpu" else "bf16")]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    config = DiTConfig(**bench_dit.MID_CONFIG)
    eager = SteadyDancerDiT(config).eval()
    bench_dit.randomise(eager)
    eager = eager.to(device, dtype)
    compiled = copy.deepcopy(eager)
    rc = compile_blocks(compiled, backend=args.backend)
    inputs = bench_dit.make_inputs(config, bench_dit.MID_LATENT, bench_dit.MID_TEXT_TOKENS, device=device, dtype=dtype)
    with torch.inference_mode():
        reference = eager(**inputs)
        sync()
        start = time.perf_counter()
        reference = eager(**inputs)
        sync()
        eager_once = time.perf_counter() - start
        start = time.perf_counter()
        out = compiled(**inputs)
        sync()
        first = time.perf_counter() - start
        times = bench_dit.timed({"eager": lambda: eager(**inputs), "compiled": lambda: compiled(**inputs)},
                                args.repeats, sync)
    diff = (out.double() - reference.double())
    result = dict(config=bench_dit.MID_CONFIG, latent=list(bench_dit.MID_LATENT),
                  text_tokens=bench_dit.MID_TEXT_TOKENS, dtype=str(dtype), device=str(device), backend=args.backend,
                  threads=torch.get_num_threads(), torch=torch.__version__,
                  machine=platform.processor() or platform.machine(), repeats=args.repeats,
                  load_average_1min=os.getloadavg()[0],
                  compile_status=rc.status, first_compiled_forward_seconds=first,
                  compile_seconds=first - eager_once,
                  max_abs_diff=float(diff.abs().max()),
                  rel_l2_diff=float(diff.norm() / reference.double().norm()),
                  output_max_abs=float(reference.abs().max()))
    for name, (wall, cpu) in times.items():
        result[name] = dict(seconds=statistics.median(wall), min_seconds=min(wall),
                            cpu_seconds=statistics.median(cpu), all_seconds=wall)
    result["speedup_wall_median"] = result["eager"]["seconds"] / result["compiled"]["seconds"]
    result["speedup_cpu_median"] = result["eager"]["cpu_seconds"] / result["compiled"]["cpu_seconds"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "compile.json" if device.type == "cpu" else f"compile_{device.type}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=1) + "\n")
    print(f"{rc.status}: compile {result['compile_seconds']:.1f} s; per forward {result['compiled']['seconds']:.4f} s "
          f"compiled vs {result['eager']['seconds']:.4f} s eager (median of {args.repeats}; "
          f"{result['speedup_wall_median']:.2f}x wall, {result['speedup_cpu_median']:.2f}x CPU time); "
          f"max |diff| {result['max_abs_diff']:.2e} (output max {result['output_max_abs']:.2f}), "
          f"rel. L2 {result['rel_l2_diff']:.1e}")
    return result


if __name__ == "__main__":
    main()
