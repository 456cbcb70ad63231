"""Shared pieces of the GPU proof's parts (``benchmarks/gpu_proof.py`` runs each part in its own process).

Every part is ``python3 benchmarks/gpu/<part>.py [--out DIR] [--tiny]`` and writes ``DIR/gpu_<part>.json`` (default
DIR: .gpu-proof/results, git-ignored) with a ``status`` of "ok", "skipped: <why>" or "failed: <error>", the
``environment`` (the device by name) and a ``summary``: one line for the table. ``--tiny`` runs the same code on
tiny models on whatever device there is (the CPU here) to check a part without a GPU; its JSON says
``"tiny": true`` and ``gpu_proof.py --collect`` never copies it into benchmarks/results.
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
RESULTS = REPO / ".gpu-proof" / "results"
GIB = 1 << 30
GB = 1e9
FULL_SIZE = (832, 480, 81)          # width, height, frames
TEXT_TOKENS = 120                   # prompt tokens of the benchmark contexts (padded to text_len by the model)


class Skip(Exception):
    """The part cannot run here (an option or a package is missing); its message says why."""


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(RESULTS), help="folder for gpu_<part>.json (default .gpu-proof/results)")
    p.add_argument("--tiny", action="store_true", help="tiny models on any device (checks the part, no figures)")
    p.add_argument("--repeats", type=int, default=2, help="timed repeats after one warm-up")
    return p


def device_for(tiny: bool, needs_cuda: bool = True) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if tiny or not needs_cuda:
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


def context_bytes(device: torch.device) -> int | None:
    """Device memory in use outside torch's allocator (the CUDA context, loaded kernels, library handles; other
    processes on the card count too): total - free - reserved. None off CUDA."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    return total - free - torch.cuda.memory_reserved(device)


def memory(device: torch.device) -> dict:
    """Peak allocated and reserved since the last ``reset_peak``, the context now, and reserved + context (what
    the card must hold) in GiB and GB. Empty off CUDA."""
    if device.type != "cuda":
        return {}
    reserved, context = torch.cuda.max_memory_reserved(device), context_bytes(device)
    return {"peak_allocated_gib": torch.cuda.max_memory_allocated(device) / GIB, "peak_reserved_gib": reserved / GIB,
            "context_gib": context / GIB, "device_use_gib": (reserved + context) / GIB,
            "device_use_gb": (reserved + context) / GB}


def memory_text(mem: dict) -> str:
    """"peak reserved X GiB + context Y GiB = Z GB" from a dict holding ``memory``'s figures; "" without them."""
    if mem.get("peak_reserved_gib") is None:
        return ""
    return (f"peak reserved {mem['peak_reserved_gib']:.1f} GiB + context {mem['context_gib']:.2f} GiB = "
            f"{mem['device_use_gb']:.1f} GB")


def timed(fn, device: torch.device, repeats: int, warmup=None) -> dict:
    """One warm-up call (``warmup``, default ``fn``; its time reported apart: it includes any compilation), then
    ``repeats`` timed calls of ``fn``."""
    sync(device)
    start = time.perf_counter()
    (warmup or fn)()
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
                   context_gib_at_start=context_bytes(device) / GIB,
                   capability=".".join(map(str, torch.cuda.get_device_capability(device))))
    return env


def out_dir(args) -> Path:
    return Path(args.out)


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


def repo_relative(text: str) -> str:
    """``text`` with this checkout's absolute path removed (results name no machine paths)."""
    return text.replace(str(REPO) + "/", "").replace(str(REPO), ".")


def run_part(part: str, description: str, body, add_args=None, needs_cuda: bool = True) -> int:
    """Parse the common options, run ``body(args, device) -> result dict`` and write it with its status.
    Without CUDA (and without ``--tiny``) a part that ``needs_cuda`` is skipped, saying so.
    Returns the exit code: 0 ok or skipped, 1 failed."""
    p = parser(description)
    if add_args is not None:
        add_args(p)
    args = p.parse_args()
    folder = out_dir(args)
    command = " ".join(["python3", f"benchmarks/gpu/{part}.py", *map(repo_relative, sys.argv[1:])])
    result = {"part": part, "command": command, "tiny": args.tiny}
    code = 0
    start = time.perf_counter()
    try:
        device = device_for(args.tiny, needs_cuda)
        result["environment"] = environment(device)
        result.update(body(args, device))
        result.setdefault("status", "ok")
    except Skip as why:
        result.update(status=f"skipped: {why}", summary="")
    except Exception as err:   # the part failed; the suite goes on with the next one
        traceback.print_exc()
        result.update(status=f"failed: {type(err).__name__}: {err}", summary="")
        code = 1
    if result["status"].startswith("failed") and code == 0:
        code = 1
    result["wall_seconds"] = time.perf_counter() - start
    path = write(folder, part, result)
    summary = result.get("summary", "")
    print(f"{part}: {result['status']}" + (f"; {summary}" if summary and summary != result["status"] else ""))
    print(f"wrote {path}")
    return code
