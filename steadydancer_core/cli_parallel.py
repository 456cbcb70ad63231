"""The CLI on several processes (GPUs), started by ``torchrun``::

    torchrun --standalone --nproc_per_node 4 -m steadydancer_core.cli --photo me.png --video dance.mp4 \\
        --models ComfyUI/models --sequence-parallel 2 --guidance-parallel 2 --out dance.mp4

Every process runs ``cli.main``; ``start(args)`` sees torchrun's ``WORLD_SIZE``, checks it against
``--sequence-parallel`` x ``--guidance-parallel`` and starts the process group (NCCL and GPU ``LOCAL_RANK`` on a
CUDA machine, gloo on the CPU). Rank 0 does all a single process does: it checks the options, reads the photo and
the driving video, extracts and aligns the poses, shows the progress, decodes and writes the mp4. The other ranks
wait for what ``generate`` needs of that (``JobInputs``: the model files, the loader and generation settings, the
photo and the number of pose frames; never the frames), load their share of the DiT and run ``generate`` silently.

Errors: an error of rank 0 ends the other ranks quietly (rank 0 prints it, once); an error of another rank is
printed by that rank, prefixed ``[rank r]``, and rank 0 stops with "rank r of n failed: ...". Exit code 2 either way.
"""
from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from . import (
    PARALLEL,
    FrameCount,
    GenerationSettings,
    LoaderSettings,
    ModelFiles,
    OptionError,
    ParallelConfig,
    RankFailedError,
    generate,
    launched_world_size,
    load_model,
    parallel_config,
    start_process_group,
)
from .cli_options import CLIError, flagged, option_values

log = logging.getLogger("steadydancer")

# how long the other ranks wait for rank 0's inputs (it extracts the poses of the whole driving video first)
INPUTS_TIMEOUT = datetime.timedelta(hours=6)


@dataclass
class JobInputs:
    """What rank 0 hands the other ranks (``error``: why it stopped instead; the other fields are then None)."""

    files: Optional[ModelFiles] = None
    loader: Optional[LoaderSettings] = None
    settings: Optional[GenerationSettings] = None
    photo: Optional[torch.Tensor] = None             # [H, W, 3] float in [0, 1], as rank 0 passes it to generate
    positive_frames: int = 0
    negative_frames: int = 0
    error: Optional[str] = None


def config_of(args) -> ParallelConfig:
    """The ``ParallelConfig`` of the parsed ``--sequence-parallel`` / ``--guidance-parallel`` / ``--shard-blocks``."""
    try:
        return parallel_config(**option_values(args, PARALLEL))
    except (OptionError, ValueError) as err:
        raise CLIError(flagged(str(err))) from None


def _layout_words(config: ParallelConfig) -> str:
    return f"--sequence-parallel {config.sequence} x --guidance-parallel {config.guidance}"


def start(args) -> Optional["Launch"]:
    """None for one process (no torchrun, degrees 1); else this rank's ``Launch`` with the process group started.
    A layout that does not match the number of processes is a ``CLIError`` naming the fix."""
    config = config_of(args)
    world = launched_world_size()
    if world == 1:
        if config.world_size > 1:
            raise CLIError(f"{_layout_words(config)} needs {config.world_size} processes: start it with torchrun "
                           f"--standalone --nproc_per_node {config.world_size} -m steadydancer_core.cli ...")
        return None
    if world != config.world_size:
        raise CLIError(f"torchrun started {world} processes but {_layout_words(config)} = {config.world_size}; "
                       f"set --nproc_per_node {config.world_size} or change the degrees (their product must be "
                       f"{world})")
    start_process_group()
    rank = dist.get_rank()
    group = dist.new_group(backend="gloo", timeout=INPUTS_TIMEOUT)      # only rank 0's inputs wait this long
    if rank != 0:
        _quiet_logging(rank)
    return Launch(rank, config, group)


def _quiet_logging(rank: int) -> None:
    """Ranks other than 0 print only their own errors, prefixed with their rank."""
    root = logging.getLogger()
    root.setLevel(logging.ERROR)
    for handler in root.handlers:
        handler.setFormatter(logging.Formatter(f"[rank {rank}] %(message)s"))


class Launch:
    """One rank of a torchrun start (see the module docstring). Used as a context manager around the rank's run:
    it tells the other ranks when rank 0 stops early, turns another rank's failure into a one-line ``CLIError`` and
    ends the process group."""

    def __init__(self, rank: int, config: ParallelConfig, group):
        self.rank, self.config, self.group = rank, config, group
        self.runtime = None
        self.shared = False

    @property
    def leads(self) -> bool:
        return self.rank == 0

    def share(self, inputs: JobInputs) -> None:
        """Rank 0: hand ``inputs`` to the other ranks."""
        self.shared = True
        dist.broadcast_object_list([inputs], src=0, group=self.group)

    def receive(self) -> JobInputs:
        """Ranks other than 0: rank 0's inputs (a quiet ``CLIError`` when rank 0 stopped instead)."""
        box = [None]
        dist.broadcast_object_list(box, src=0, group=self.group)
        inputs = box[0]
        if inputs.error is not None:
            self._stop_quietly(inputs.error)
        return inputs

    def load(self, files: ModelFiles, loader: LoaderSettings):
        """This rank's model: the DiT (a replica on its device, or its shard), and on rank 0 the VAE and encoders."""
        model = load_model(files, loader, parallel=self.config)
        self.runtime = model.parallel
        return model

    def follow(self) -> None:
        """A rank other than 0: receive the inputs, load, run ``generate`` with rank 0; returns None."""
        inputs = self.receive()
        model = self.load(inputs.files, inputs.loader)
        generate(model, inputs.photo, FrameCount(inputs.positive_frames), FrameCount(inputs.negative_frames),
                 inputs.settings)

    def _stop_quietly(self, message: str) -> None:
        logging.getLogger().disabled = log.disabled = True     # rank 0 shows the error
        raise CLIError(message)

    def __enter__(self) -> "Launch":
        return self

    def __exit__(self, kind, error, trace) -> None:
        try:
            if error is not None and self.leads and not self.shared:
                self.share(JobInputs(error=str(error) or type(error).__name__))
            if error is not None and self.runtime is not None and self.runtime.broken is None:
                self.runtime.fail(error)            # an error outside generate: the other ranks stop too
        finally:
            self.close()
        if isinstance(error, RankFailedError):
            if not self.leads:
                self._stop_quietly(str(error))
            raise CLIError(str(error)) from None

    def close(self) -> None:
        """End the process group (left to the exit after a failure: a collective may be half-way)."""
        if self.runtime is not None and self.runtime.broken is not None:
            return
        if self.runtime is not None:
            self.runtime.close()
        if dist.is_initialized():
            dist.destroy_process_group()
