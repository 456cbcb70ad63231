"""One clip on several processes (GPUs): the layout of the ranks, their process groups, and how they stay in step.

Degrees (``ParallelConfig``):

* ``sequence`` (Ulysses, ``models/sequence_parallel.py``): the ranks of one group split every DiT forward's tokens
  and exchange q / k / v around self-attention. Must divide the DiT's head count (40: 2, 4, 5 or 8).
* ``guidance`` (``sampling/guidance_parallel.py``): the guidance passes of a step (conditional, text-unconditional,
  pose-unconditional) run on different groups; the predictions are gathered, so every rank forms the same latent.
* ``shard_blocks``: the DiT blocks are sharded over the sequence group with FSDP2 (``fully_shard``) for cards too
  small for a replica; each block's weights are gathered just before it runs.

Layout: ``world = guidance * sequence`` ranks; rank ``r`` is sequence rank ``r % sequence`` of guidance group
``r // sequence``, so a sequence group is ``sequence`` consecutive ranks (one machine's fast links). Rank 0 runs
the encoders and the VAE and broadcasts the conditioning; every rank holds the DiT (a replica, or its shard).

Staying in step: every collective of the job is waited on through ``ParallelRuntime.wait``, which on CPU (gloo)
also watches the store for a failure another rank posted; a failing rank posts ``"rank r of n failed: <error>"``
(``fail``) and every other rank raises ``RankFailedError`` with that text at its next wait, within one step. On
CUDA (NCCL) a wait does not block the host, so the failure is seen at the next step boundary (``check``) or, if a
rank's GPU is already stuck in a collective, after the process group's timeout. A group that saw a failure is
``broken``: its processes start again (collectives may be left half-matched). Cancelling is agreed by all ranks at
every step (``any_rank``), so a cancel ends every rank at the same step and leaves the group usable.

``init_parallel(config)`` builds the groups from an initialised default group (``torch.distributed
.init_process_group``, by ``torchrun`` or a test) and ``ParallelRuntime.attach(model)`` installs it on a
``SteadyDancerModel``; ``generate()`` then runs on every rank and returns the same latents on all of them.
"""
from __future__ import annotations

import contextlib
import datetime
import time
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import torch
import torch.distributed as dist

from ..models.dit_config import DiTConfig
from ..models.sequence_parallel import MAX_SEQUENCE_DEGREE, SequenceParallel, valid_sequence_degrees
from .memory_plan import RankShare

GUIDANCE_DEGREES = (1, 2, 3)           # SteadyDancer runs at most three guidance passes per step
PARALLEL_TIMEOUT = datetime.timedelta(minutes=10)   # longest wait in one collective before it fails
_WAIT_POLL_SECONDS = 0.002              # longest sleep between two looks at a pending CPU collective
_FAILURE_CHECK_SECONDS = 0.01           # how often a waiting CPU rank reads the store for another rank's failure
_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int64, torch.int32, torch.uint8,
           torch.bool)


class RankFailedError(RuntimeError):
    """Another rank of the job failed; the message is that rank's error."""


@dataclass(frozen=True)
class ParallelConfig:
    """How one clip is split over ``sequence * guidance`` processes; validated on construction.

    sequence: ranks splitting each forward's tokens (1 = off; else a divisor of ``num_heads`` up to
    ``MAX_SEQUENCE_DEGREE``); guidance: groups splitting each step's guidance passes (1, 2 or 3);
    shard_blocks: FSDP2-shard the DiT blocks over the sequence ranks (needs sequence >= 2); num_heads: the DiT's
    attention heads (40 for SteadyDancer-14B; ``for_heads`` re-checks against the loaded model).
    """

    sequence: int = 1
    guidance: int = 1
    shard_blocks: bool = False
    num_heads: int = DiTConfig.num_heads

    def __post_init__(self):
        for name in ("sequence", "guidance", "num_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"parallel {name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.shard_blocks, bool):
            raise ValueError(f"shard_blocks must be True or False, got {self.shard_blocks!r}")
        valid = valid_sequence_degrees(self.num_heads)
        if self.sequence != 1 and self.sequence not in valid:
            choices = ", ".join(map(str, valid)) if valid else "none (run without sequence parallelism)"
            raise ValueError(f"sequence-parallel degree {self.sequence} must divide the DiT's {self.num_heads} "
                             f"attention heads (at most {MAX_SEQUENCE_DEGREE} ranks); valid degrees: {choices}")
        if self.guidance not in GUIDANCE_DEGREES:
            raise ValueError(f"guidance-parallel degree must be 1, 2 or 3 (a step has at most three guidance "
                             f"passes), got {self.guidance}")
        if self.shard_blocks and self.sequence < 2:
            raise ValueError("shard_blocks splits the DiT blocks over the sequence-parallel GPUs: set sequence to 2 or "
                             "more (sequence_parallel on the node and CLI), or turn shard_blocks off")

    @property
    def world_size(self) -> int:
        return self.sequence * self.guidance

    @property
    def share(self) -> RankShare:
        """What the memory planner needs of this layout."""
        return RankShare(sequence=self.sequence, guidance=self.guidance, shard_blocks=self.shard_blocks)

    def for_heads(self, num_heads: int) -> "ParallelConfig":
        """This layout checked against a DiT with ``num_heads`` heads (raises naming the valid degrees)."""
        return replace(self, num_heads=num_heads)

    def describe(self) -> str:
        """E.g. "2 guidance groups x 4 sequence ranks"."""
        return self.share.layout()


@dataclass(frozen=True)
class RankLayout:
    """Where rank ``rank`` sits: sequence rank ``sequence_rank`` of guidance group ``guidance_group``;
    ``sequence_ranks``: the ranks of its sequence group; ``guidance_peers``: the ranks with its sequence rank in
    every guidance group (one per group, in group order)."""

    rank: int
    sequence_rank: int
    guidance_group: int
    sequence_ranks: tuple
    guidance_peers: tuple


def rank_layout(config: ParallelConfig, rank: int) -> RankLayout:
    """The place of ``rank`` (0 .. world_size - 1) in ``config``'s layout (pure)."""
    if not 0 <= rank < config.world_size:
        raise ValueError(f"rank {rank} is outside the {config.world_size} ranks of {config.describe()}")
    s, g = rank % config.sequence, rank // config.sequence
    return RankLayout(rank=rank, sequence_rank=s, guidance_group=g,
                      sequence_ranks=tuple(g * config.sequence + i for i in range(config.sequence)),
                      guidance_peers=tuple(j * config.sequence + s for j in range(config.guidance)))


def _default_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def init_parallel(config: ParallelConfig, device: Optional[torch.device] = None,
                  timeout: datetime.timedelta = PARALLEL_TIMEOUT) -> "ParallelRuntime":
    """Build the process groups of ``config`` on every rank, from the initialised default group.

    Every rank must call it, in the same order as its other group creations. device: this rank's execution
    device (default: the current CUDA device with NCCL, else the CPU). The data groups use the default group's
    backend; a gloo group over all ranks carries the small per-step agreements.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("parallel generation needs torch.distributed initialised first: start the processes "
                           "with torchrun (or call torch.distributed.init_process_group)")
    world = dist.get_world_size()
    if world != config.world_size:
        raise ValueError(f"{config.describe()} needs {config.world_size} processes, but {world} were started; "
                         f"start {config.world_size} or change the degrees")
    layout = rank_layout(config, dist.get_rank())
    sequence_group = guidance_group = None
    for g in range(config.guidance):            # every rank creates every group, in the same order
        group = dist.new_group([g * config.sequence + i for i in range(config.sequence)], timeout=timeout)
        if g == layout.guidance_group and config.sequence > 1:
            sequence_group = group
    for s in range(config.sequence):
        group = dist.new_group([j * config.sequence + s for j in range(config.guidance)], timeout=timeout)
        if s == layout.sequence_rank and config.guidance > 1:
            guidance_group = group
    status_group = dist.new_group(list(range(world)), backend="gloo", timeout=timeout)
    return ParallelRuntime(config, layout, torch.device(device) if device is not None else _default_device(),
                           sequence_group, guidance_group, status_group)


class ParallelRuntime:
    """The process groups of one rank and the calls that keep the ranks in step (see the module docstring).

    sequence_group / guidance_group: None when that degree is 1; status_group: gloo, all ranks; ``sequence``:
    the ``SequenceParallel`` installed on the DiT by ``attach`` (None without sequence parallelism).
    """

    def __init__(self, config: ParallelConfig, layout: RankLayout, device: torch.device, sequence_group,
                 guidance_group, status_group):
        self.config, self.layout, self.device = config, layout, device
        self.sequence_group, self.guidance_group, self.status_group = sequence_group, guidance_group, status_group
        self.store = dist.group.WORLD.get_group_store()
        self._prefix = f"steadydancer/{status_group.group_name}"
        self._polls = device.type == "cpu"
        self.sequence: Optional[SequenceParallel] = None
        self.broken: Optional[str] = None
        self.jobs = 0

    @property
    def rank(self) -> int:
        return self.layout.rank

    @property
    def share(self) -> RankShare:
        """This rank's share of the job, for the memory planner."""
        return self.config.share

    @property
    def is_conditioning_rank(self) -> bool:
        """Rank 0 runs the text / image encoders and the VAE; the others receive what they produce."""
        return self.layout.rank == 0

    # --- installing on a model ---------------------------------------------------------------------------

    def attach(self, model) -> None:
        """Install this runtime on ``model`` (a ``SteadyDancerModel``): the DiT's blocks run sequence-parallel,
        sharded when asked, and ``generate(model, ...)`` runs the job on every rank."""
        self.config.for_heads(model.dit.config.num_heads)
        if self.config.sequence > 1:
            self.sequence = SequenceParallel(self.sequence_group, wait=self.wait)
            self.sequence.attach(model.dit)
        if self.config.shard_blocks:
            shard_blocks(model.dit, self.sequence_group, self.device)
        model.parallel = self

    # --- failures and agreement --------------------------------------------------------------------------

    def _failure_key(self) -> str:
        return f"{self._prefix}/job{self.jobs}/failure"

    def begin_job(self) -> None:
        """Start a job (every rank, in step); refused once the group saw a failure."""
        if self.broken is not None:
            raise RankFailedError(f"the parallel group stopped after an error ({self.broken}); start the "
                                  f"processes again")
        self.jobs += 1

    def fail(self, error: BaseException) -> None:
        """This rank failed with ``error``: tell the others (first failure wins) and mark the group broken."""
        if isinstance(error, RankFailedError):
            self.broken = str(error)
            return
        text = f"rank {self.rank} of {self.config.world_size} failed: {type(error).__name__}: {error}"
        self.broken = text
        key = self._failure_key()
        if self.store.add(f"{key}/count", 1) == 1:
            self.store.set(key, text)

    def check(self) -> None:
        """Raise ``RankFailedError`` when another rank posted a failure for the current job."""
        key = self._failure_key()
        if self.store.check([key]):
            text = self.store.get(key).decode()
            self.broken = text
            raise RankFailedError(text)

    def wait(self, work) -> None:
        """Wait for a collective started with ``async_op=True``; on CPU, watch for another rank's failure
        meanwhile (on CUDA the wait only orders the stream, the host goes on)."""
        if self._polls:
            delay, next_check = 0.0, time.monotonic() + _FAILURE_CHECK_SECONDS
            while not work.is_completed():
                if time.monotonic() >= next_check:
                    self.check()
                    next_check = time.monotonic() + _FAILURE_CHECK_SECONDS
                time.sleep(delay)
                delay = min(2 * delay + 1e-5, _WAIT_POLL_SECONDS)
        work.wait()

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on any rank (one small all-reduce over all ranks); first raises
        ``RankFailedError`` when another rank has failed (the step boundary check of CUDA jobs)."""
        self.check()
        value = torch.tensor([int(bool(flag))], dtype=torch.int32)
        self.wait(dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self.status_group, async_op=True))
        return bool(value.item())

    def sum_ranks(self, values: Sequence[int]) -> list[int]:
        """Element-wise sum of ``values`` over all ranks (the same list on every rank)."""
        tensor = torch.tensor(list(values), dtype=torch.int64)
        self.wait(dist.all_reduce(tensor, group=self.status_group, async_op=True))
        return tensor.tolist()

    # --- data --------------------------------------------------------------------------------------------

    def gather_guidance(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x`` from each guidance group (this rank's peers, in group order); [x] without guidance groups."""
        if self.guidance_group is None:
            return [x]
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(self.config.guidance)]
        self.wait(dist.all_gather(parts, x, group=self.guidance_group, async_op=True))
        return parts

    def broadcast(self, tensors: Optional[Sequence[torch.Tensor]]) -> tuple:
        """Rank 0's ``tensors`` on every rank (others pass None), on this rank's device, same dtypes and shapes."""
        if self.is_conditioning_rank:
            tensors = [t.to(self.device).contiguous() for t in tensors]
            header = [len(tensors)] + [v for t in tensors for v in (_DTYPES.index(t.dtype), t.dim(), *t.shape)]
        size = torch.tensor([len(header) if self.is_conditioning_rank else 0], dtype=torch.int64, device=self.device)
        self._broadcast(size)
        head = torch.tensor(header, dtype=torch.int64, device=self.device) if self.is_conditioning_rank else \
            torch.empty(int(size.item()), dtype=torch.int64, device=self.device)
        self._broadcast(head)
        if not self.is_conditioning_rank:
            tensors, values, i = [], head.tolist(), 1
            for _ in range(values[0]):
                dtype, ndim = _DTYPES[values[i]], values[i + 1]
                tensors.append(torch.empty(values[i + 2:i + 2 + ndim], dtype=dtype, device=self.device))
                i += 2 + ndim
        for t in tensors:
            self._broadcast(t)
        return tuple(tensors)

    def _broadcast(self, t: torch.Tensor) -> None:
        self.wait(dist.broadcast(t, src=0, async_op=True))

    def close(self) -> None:
        """Forget the groups (the default group stays; ``destroy_process_group`` ends it)."""
        for group in (self.sequence_group, self.guidance_group, self.status_group):
            if group is not None:
                dist.destroy_process_group(group)
        self.sequence_group = self.guidance_group = self.status_group = None


def shard_blocks(dit, group, device: torch.device) -> None:
    """FSDP2-shard each DiT block over ``group``: a rank keeps 1/n of every block's weights and gathers a block's
    weights just before it runs (dropping them after). Plain float weights only (fp8 / GGUF blocks stay packed
    and cannot be sharded); no block swap."""
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.fsdp import fully_shard

    packed = [n for n, p in dit.blocks.named_parameters() if not p.dtype.is_floating_point or p.element_size() < 2]
    if packed:
        raise ValueError(f"shard_blocks needs bf16 / fp16 / fp32 DiT weights; {len(packed)} block tensors are "
                         f"packed (fp8 / GGUF, e.g. {packed[0]}): load bf16 weights or turn shard_blocks off")
    mesh = DeviceMesh.from_group(group, device.type)
    for block in dit.blocks:
        fully_shard(block, mesh=mesh, reshard_after_forward=True)


@contextlib.contextmanager
def parallel_process_group(rank: int, world_size: int, init_method: str, backend: str = "gloo",
                           timeout: datetime.timedelta = PARALLEL_TIMEOUT):
    """``init_process_group`` for the duration of a ``with`` block (tests, benchmarks); destroyed after."""
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size, timeout=timeout)
    try:
        yield
    finally:
        dist.destroy_process_group()
