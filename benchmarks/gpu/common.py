"""Shared pieces of the GPU suite's parts (``benchmarks/gpu_suite.sh`` runs each part in its own process).

Every part is ``python benchmarks/gpu/<part>.py [--out DIR] [--tiny]`` and writes ``DIR/gpu_<part>.json`` (default
DIR: benchmarks/results) with a ``status`` of "ok", "skipped: <why>" or "failed: <error>", and a ``summary``: one
line for the suite's table. ``--tiny`` runs the same code on tiny models on whatever device there is (the CPU
here), to check a part without a GPU; its JSON goes to DIR/tiny/ so it never replaces a GPU figure.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results"
GIB = 1 << 30
FULL_SIZE = (832, 480, 81)          # width, height, frames
TEXT_TOKENS = 120                   # prompt tokens of the benchmark contexts (padded to text_len by the model)


class Skip(Exception):
    """The part cannot run here (an option or a package is missing); its message says why."""


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(RESULTS), help="folder for gpu_<part>.json (default benchmarks/results)")
    p.add_argument("--tiny", action="store_true", help="tiny models on any device (checks the part, no figures)")
    p.add_argument("--repeats", type=int, default=2, help="timed repeats after one warm-up")
    return p


def device_for(tiny: bool) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if tiny:
        return torch.device("cpu")
    raise Skip("no CUDA device (torch.cuda.is_available() is False)")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device):
    return torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None


def timed(fn, device: torch.device, repeats: int) -> dict:
    """One warm-up call (its time reported apart: it includes any compilation), then ``repeats`` timed calls."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    first = time.perf_counter() - start
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "all_seconds": times, "first_call_seconds": first}


def environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)}
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        env.update(total_gib=total / GIB, free_gib_at_start=free / GIB,
                   capability=".".join(map(str, torch.cuda.get_device_capability(device))))
    return env


def out_dir(args) -> Path:
    return Path(args.out) / ("tiny" if args.tiny else "")


def dense_bf16_rate(args) -> float | None:
    """The dense bf16 matmul rate the matmul part measured in this run (TFLOP/s), if it ran."""
    path = out_dir(args) / "gpu_matmul.json"
    try:
        return json.loads(path.read_text()).get("bf16_tflops")
    except (OSError, ValueError):
        return None


def write(out_dir: Path, part: str, result: dict) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"gpu_{part}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str) + "\n")
    tmp.replace(path)
    return path


def run_part(part: str, description: str, body, add_args=None) -> int:
    """Parse the common options, run ``body(args, device) -> result dict`` and write it with its status.
    Returns the exit code: 0 ok or skipped, 1 failed."""
    p = parser(description)
    if add_args is not None:
        add_args(p)
    args = p.parse_args()
    folder = out_dir(args)
    command = " ".join(["python", f"benchmarks/gpu/{part}.py", *sys.argv[1:]])
    result = {"part": part, "command": command, "tiny": args.tiny}
    code = 0
    start = time.perf_counter()
    try:
        device = device_for(args.tiny)
        result["environment"] = environment(device)
        result.update(body(args, device))
        result.setdefault("status", "ok")
    except Skip as why:
        result.update(status=f"skipped: {why}", summary="")
    except Exception as err:   # the part failed; the suite goes on with the next one
        traceback.print_exc()
        result.update(status=f"failed: {type(err).__name__}: {err}", summary="")
        code = 1
    result["wall_seconds"] = time.perf_counter() - start
    path = write(folder, part, result)
    summary = result.get("summary", "")
    print(f"{part}: {result['status']}" + (f"; {summary}" if summary and summary != result["status"] else ""))
    print(f"wrote {path}")
    return code
