"""Parallel generation on the CPU: wall time and bytes exchanged per DiT pass on 1, 2 and 4 gloo ranks.

The mid config of bench_dit.py (dim 512, 4 heads, 4 layers, latent 5x16x16 = 448 tokens with the two reference
frames, fp32, prompt 60 tokens). Layouts (sequence ranks x guidance groups): 1x1, 2x1, 1x2, 4x1, 2x2. Per layout:

* ``forward_seconds``: one DiT pass (batch 1), median over the repeats of the slowest rank (and the CPU seconds
  of all ranks together: the work the split adds);
* ``step_seconds``: one guided step of three passes (conditional, text-unconditional, pose-unconditional): each
  guidance group runs its passes, then the predictions are gathered (what ``generate()`` does per step);
* ``bytes_per_pass``: what one rank sends per pass: the q / k / v all-to-alls and the final token gather of
  sequence parallelism; ``guidance_bytes_per_step``: the prediction gather among guidance groups.

Each rank computes with ``--threads`` threads (default 1, so that every layout does the same work per thread).
With fewer cores than ranks the ranks share cores and the wall times say nothing about speed-ups on GPUs (see
docs/multi_gpu.md for those); the CPU seconds of all ranks together show the work the split adds, and the bytes
hold on any device for the same token count and dtype. Writes benchmarks/results/bench_parallel.json.

    python benchmarks/bench_parallel.py [--repeats 5] [--threads 1] [--layouts 1x1,2x1,1x2,4x1,2x2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_dit  # noqa: E402

import steadydancer_core as sd  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
LAYOUTS = ("1x1", "2x1", "1x2", "4x1", "2x2")
PASSES = 3                      # conditional, text-unconditional, pose-unconditional


def pass_inputs(config, index: int) -> dict:
    """Inputs of guidance pass ``index``: the same latent, its own context / pose condition."""
    inputs = bench_dit.make_inputs(config, bench_dit.MID_LATENT, bench_dit.MID_TEXT_TOKENS)
    g = torch.Generator().manual_seed(50 + index)
    inputs["context"] = torch.randn(inputs["context"].shape, generator=g)
    inputs["condition"] = torch.randn(inputs["condition"].shape, generator=g)
    return inputs


def rank_main(rank: int, world: int, init_file: str, layout: str, repeats: int, threads: int, out_dir: str) -> None:
    sequence, guidance = (int(v) for v in layout.split("x"))
    torch.set_num_threads(threads)
    with sd.parallel_process_group(rank, world, f"file://{init_file}"):
        config = sd.DiTConfig(**bench_dit.MID_CONFIG)
        runtime = sd.init_parallel(sd.ParallelConfig(sequence=sequence, guidance=guidance,
                                                     num_heads=config.num_heads))
        model = sd.SteadyDancerDiT(config).eval()
        bench_dit.randomise(model)
        runtime.attach(sd.SteadyDancerModel(dit=model, vae=None, text_encoder=None, image_encoder=None,
                                            dtype=torch.float32))
        inputs = [pass_inputs(config, i) for i in range(PASSES)]
        group = runtime.layout.guidance_group
        mine = [i for i in range(PASSES) if i % guidance == group]
        width = -(-PASSES // guidance)

        def forward():
            return model(**inputs[0])

        def step():
            outs = [model(**inputs[i])[0] for i in mine]
            stack = torch.zeros(width, *outs[0].shape) if outs else None
            for j, out in enumerate(outs):
                stack[j] = out
            return runtime.gather_guidance(stack)

        record = {}
        with torch.inference_mode(), model.caching_context(max_entries=PASSES):
            for name, fn in (("forward", forward), ("step", step)):
                fn()                                               # warm-up (fills the context cache)
                before = dict(runtime.sequence.traffic) if runtime.sequence is not None else {}
                times, cpu = [], []
                for _ in range(repeats):
                    runtime.any_rank(False)                        # start together
                    start, start_cpu = time.perf_counter(), time.process_time()
                    fn()
                    times.append(time.perf_counter() - start)
                    cpu.append(time.process_time() - start_cpu)
                after = dict(runtime.sequence.traffic) if runtime.sequence is not None else {}
                record[name], record[f"{name}_cpu"] = times, cpu
                record[f"{name}_traffic"] = {k: (after[k] - before[k]) / repeats for k in after}
        record["guidance_bytes_per_step"] = (
            0 if guidance == 1 else width * 16 * bench_dit.MID_LATENT[0] * bench_dit.MID_LATENT[1]
            * bench_dit.MID_LATENT[2] * 4 * (guidance - 1))
        record["threads"] = torch.get_num_threads()
        runtime.close()
    torch.save(record, Path(out_dir) / f"rank{rank}.pt")


def run_layout(layout: str, repeats: int, threads: int) -> dict:
    sequence, guidance = (int(v) for v in layout.split("x"))
    world = sequence * guidance
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(rank_main, args=(world, os.path.join(tmp, "init"), layout, repeats, threads, tmp),
                           nprocs=world, join=True, start_method="spawn")
        records = [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=True) for r in range(world)]
    slowest = {name: [max(r[name][i] for r in records) for i in range(repeats)] for name in ("forward", "step")}
    cpu = {name: [sum(r[f"{name}_cpu"][i] for r in records) for i in range(repeats)] for name in ("forward", "step")}
    traffic = records[0]["forward_traffic"]
    return dict(layout=layout, ranks=world, sequence=sequence, guidance=guidance,
                threads_per_rank=records[0]["threads"],
                forward_seconds=statistics.median(slowest["forward"]), step_seconds=statistics.median(slowest["step"]),
                all_forward_seconds=slowest["forward"], all_step_seconds=slowest["step"],
                forward_cpu_seconds_all_ranks=statistics.median(cpu["forward"]),
                step_cpu_seconds_all_ranks=statistics.median(cpu["step"]),
                bytes_per_pass=dict(traffic, total=sum(traffic.values())),
                guidance_bytes_per_step=records[0]["guidance_bytes_per_step"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5, help="timed passes / steps per layout (after one warm-up)")
    ap.add_argument("--layouts", default=",".join(LAYOUTS), help="sequence x guidance layouts, comma-separated")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    args = ap.parse_args(argv)
    rows = []
    for layout in args.layouts.split(","):
        row = run_layout(layout, args.repeats, args.threads)
        rows.append(row)
        b = row["bytes_per_pass"]
        print(f"{layout} ({row['ranks']} ranks, {row['threads_per_rank']} threads each): "
              f"{row['forward_seconds'] * 1e3:.1f} ms/pass ({row['forward_cpu_seconds_all_ranks'] * 1e3:.0f} ms "
              f"CPU, all ranks), {row['step_seconds'] * 1e3:.1f} ms/step of {PASSES} passes "
              f"({row['step_cpu_seconds_all_ranks'] * 1e3:.0f} ms CPU); sent per pass {b['total'] / 2**20:.2f} MiB, "
              f"per step (guidance) {row['guidance_bytes_per_step'] / 2**20:.2f} MiB", flush=True)
    grid = bench_dit.MID_LATENT
    tokens = (grid[0] + 2) * (grid[1] // 2) * (grid[2] // 2)
    result = dict(command=" ".join(["python", "benchmarks/bench_parallel.py", *(argv or sys.argv[1:])]),
                  config=bench_dit.MID_CONFIG, latent=list(grid), tokens=tokens, dtype="float32",
                  passes_per_step=PASSES, repeats=args.repeats, cpu_count=os.cpu_count(),
                  load_average_1min=os.getloadavg()[0], torch=torch.__version__,
                  machine=platform.processor() or platform.machine(), backend="gloo", rows=rows,
                  note="bytes_per_pass: sent by one rank; the all-to-alls send 4 * layers * (tokens / n) * dim "
                       "values per pass of which (n - 1) / n leave the rank; CPU times with fewer cores than ranks "
                       "are not speed-ups")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_parallel.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
