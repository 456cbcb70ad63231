"""Starting the processes' group: ``start_process_group`` initialises ``torch.distributed`` from the environment
``torchrun`` sets (or from an explicit rendezvous, for the ComfyUI workers), with NCCL and this rank's GPU on CUDA
machines and gloo on the CPU; ``join_parallel`` builds a ``ParallelRuntime`` on top of it; ``fits_straight_onto``
says whether a rank's DiT is loaded straight onto its GPU. ``FrameCount`` is what the ranks other than 0 pass to
``generate`` as pose frames.

Every rank uses the GPU of its local rank (``cuda:LOCAL_RANK``), so one machine's N processes use its first N
visible GPUs (``CUDA_VISIBLE_DEVICES`` chooses which).
"""
from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist

from .memory_plan import OFFLOAD_MIN_RESERVE_BYTES
from .parallel import PARALLEL_TIMEOUT, ParallelConfig, ParallelRuntime, init_parallel

__all__ = ["FrameCount", "TORCHRUN_VARIABLES", "file_bytes", "fits_straight_onto", "join_parallel",
           "launched_world_size", "rank_device", "start_process_group"]

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK",
                      "LOCAL_WORLD_SIZE")


def launched_world_size(environ=os.environ) -> int:
    """The number of processes ``torchrun`` started (its ``WORLD_SIZE``); 1 outside torchrun."""
    try:
        return max(1, int(environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise ValueError(f"WORLD_SIZE={environ.get('WORLD_SIZE')!r} is not a number; start the processes with "
                         "torchrun --nproc_per_node N") from None


def rank_device(local_rank: int) -> torch.device:
    """This rank's execution device: ``cuda:local_rank`` on a CUDA machine (an error naming the fix when it has too
    few GPUs), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ValueError(f"process {local_rank} needs GPU {local_rank} but only {count} are visible; start at most "
                         f"{count} processes per machine (or make more GPUs visible with CUDA_VISIBLE_DEVICES)")
    return torch.device("cuda", local_rank)


def require_gpus(config) -> None:
    """One GPU per process of the ``ParallelConfig`` on a CUDA machine (an error naming the fix when too few are
    visible); nothing on a machine without CUDA, where every process runs on the CPU."""
    if torch.cuda.is_available() and torch.cuda.device_count() < config.world_size:
        raise ValueError(f"{config.describe()} needs {config.world_size} GPUs but {torch.cuda.device_count()} are "
                         f"visible; lower sequence_parallel / guidance_parallel (their product is the GPU count)")


def start_process_group(init_method: Optional[str] = None, rank: Optional[int] = None,
                        world_size: Optional[int] = None, local_rank: Optional[int] = None,
                        timeout: datetime.timedelta = PARALLEL_TIMEOUT) -> torch.device:
    """Initialise the default process group unless it already is, and return this rank's device.

    Without arguments it reads torchrun's environment (``TORCHRUN_VARIABLES``); ``init_method`` (e.g.
    ``file:///tmp/rendezvous``) with ``rank`` / ``world_size`` / ``local_rank`` starts processes started otherwise.
    NCCL with ``cuda:local_rank`` selected when CUDA is available, else gloo.
    """
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", rank if rank is not None else 0))
    device = rank_device(local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        extra = {} if init_method is None else dict(init_method=init_method, rank=rank, world_size=world_size)
        options = dict(device_id=device) if device.type == "cuda" else {}
        dist.init_process_group(backend, timeout=timeout, **extra, **options)
    return device


def join_parallel(config: ParallelConfig) -> ParallelRuntime:
    """This process's ``ParallelRuntime`` for ``config``: the default group started first when it is not
    (``start_process_group`` from torchrun's environment), then ``init_parallel`` (every rank calls it)."""
    if not isinstance(config, ParallelConfig):
        raise ValueError(f"parallel must be a ParallelConfig (e.g. ParallelConfig(guidance=2)), got "
                         f"{type(config).__name__}")
    if not dist.is_initialized():
        world = launched_world_size()
        if world != config.world_size:
            raise ValueError(f"{config.describe()} needs {config.world_size} processes, but {world} "
                             f"{'was' if world == 1 else 'were'} started; start them with torchrun "
                             f"--nproc_per_node {config.world_size}")
        device = start_process_group()
    else:
        device = None                     # started by the caller: its backend decides (NCCL: the current GPU)
    return init_parallel(config, device=device)


def file_bytes(path) -> int:
    """Bytes of a weight file, or of every file in a weight folder (the official sharded layout)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else 0


def fits_straight_onto(dit_path, swap, policy) -> bool:
    """Whether a rank loads its DiT straight onto its device: a device that is not the CPU, the loader's offload
    not an explicit block swap (swapped blocks live in host memory anyway), and room for the file's bytes (what the
    DiT takes there, packed fp8 / GGUF included; an fp32 file cast to bf16 counts double, so it errs towards the
    host) plus ``OFFLOAD_MIN_RESERVE_BYTES`` beside what is already there. Otherwise it is read into host memory
    and placed (and swapped) as on one GPU."""
    device = policy.execution_device
    if device.type == "cpu" or swap not in ("auto", 0):
        return False
    if policy.free_memory is not None:
        free = int(policy.free_memory(device))
    elif device.type == "cuda":
        free = int(torch.cuda.mem_get_info(device)[0])
    else:
        return False
    return file_bytes(dit_path) + OFFLOAD_MIN_RESERVE_BYTES + policy.reserve_bytes <= free


class FrameCount:
    """A pose frame source of ``n`` frames that are never read: ``generate`` on a rank other than 0 needs only the
    number of frames (rank 0 reads and encodes them and broadcasts their latents), so those ranks pass
    ``FrameCount(len(poses))`` instead of the frames."""

    def __init__(self, n: int):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"FrameCount needs a number of frames >= 1, got {n!r}")
        self.n = n

    def __len__(self) -> int:
        return self.n

    def frames(self, start: int, stop: int):
        raise RuntimeError("pose frames are read on rank 0 only; this rank was given only their number")
