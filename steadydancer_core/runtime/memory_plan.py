"""Memory planner: how many DiT blocks to swap, whether guidance passes are batched, whether the VAE tiles.

Pure arithmetic (no device needed), unit-tested on CPU. The estimate of one DiT forward, per guidance pass:

    tokens      = (latent_frames + reference frames) * (H / 8 / patch_h) * (W / 8 / patch_w) / patch_t
    per token   = max(attention phase, FFN phase) * safety, counting what the DiT code keeps alive:
                  attention (at the fp32 RMS norm of k): fp32 residual 4 * dim, normed input, q and k (3 * b * dim),
                      k in fp32, the norm's fp32 intermediate and output (12 * dim)
                  FFN: the block's input and the updated fp32 residual (8 * dim), normed input (b * dim), hidden
                      and its GELU (2 * b * ffn_dim); plus the fp32 rotary tables (4 * head_dim)
    activations = passes_in_one_forward * (tokens * per token + context) + one dequantised linear (scratch)
    weights     = other + (blocks - swapped) * block + min(swapped, prefetch + 1) * block
    context cache (when requested): kept only if it fits in what the plan above leaves free, so it never costs a
                  swapped block or batching: ``sizes.context_cache_bytes`` for CONTEXT_CACHE_ENTRIES batches

with b the compute dtype's bytes. Checked against the live tensors of the real DiT forward on CPU (bf16/fp32,
dim 256-1024, 2.7k-7k tokens): estimate / measured = 0.98-1.07 (tests/test_offload.py). Passes are batched when
that streams fewer block bytes per step than running them one at a time (all resident beats batching; batching
beats swapping twice as many blocks per step).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..models.context_cache import CONTEXT_CACHE_ENTRIES
from ..models.dit_config import DiTConfig
from .sizes import context_cache_bytes, dit_activation_bytes, dit_tokens, dtype_bytes

# --- planner constants ------------------------------------------------------------------------------------------
OFFLOAD_DEFAULT_PREFETCH = 1          # swapped DiT blocks copied ahead of use
OFFLOAD_RESERVE_FRACTION = 0.1        # share of the budget kept free (allocator fragmentation, library workspaces);
                                      # keeps the planned peak of a 24 GiB card under 22.5 GB allocated
OFFLOAD_MIN_RESERVE_BYTES = 1 << 30
GIB = 1 << 30
MIB = 1 << 20
AUTO = "auto"


def format_size(nbytes: int) -> str:
    """Bytes as the reports write them, in the unit of the max_vram_gb option (GB = 2**30 bytes): "19 GB",
    "1.4 GB", "85 MB" (never "0.0 GB")."""
    nbytes = max(0, int(nbytes))
    if nbytes >= 10 * GIB:
        return f"{nbytes / GIB:.0f} GB"
    if nbytes >= GIB:
        return f"{nbytes / GIB:.1f} GB"
    return f"{max(1, round(nbytes / MIB)) if nbytes else 0} MB"


@dataclass(frozen=True)
class MemoryPlan:
    """The planner's decision for one device, model and video size.

    blocks_to_swap: DiT blocks streamed from host memory (0 = all resident); prefetch: swapped blocks copied ahead;
    offload_embeddings: the text/CLIP embedding layers are streamed too; batch_passes: guidance passes run as one
    batched forward; vae_tile: (h, w) pixel tile for VAE decode or None (untiled); vae_budget_bytes: activation
    budget for the VAE's own tiling; fits: the estimate fits the budget; context_cache: the DiT keeps its context
    projections between steps (``context_cache_bytes`` of them are in ``activation_bytes``); explanation: one line
    for the user; suggestion: what to change after an out-of-memory error.
    """

    device: str
    blocks_to_swap: int
    prefetch: int
    offload_embeddings: bool
    batch_passes: bool
    vae_tile: tuple | None
    vae_budget_bytes: int
    budget_bytes: int
    usable_bytes: int
    weight_bytes: int
    activation_bytes: int
    estimated_peak_bytes: int
    tokens: int
    fits: bool
    explanation: str
    suggestion: str
    context_cache: bool = False
    context_cache_bytes: int = 0
    n_blocks: int = 0
    width: int = 0
    height: int = 0
    frames: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def on_cpu(self) -> bool:
        return str(self.device).startswith("cpu")

    def summary(self) -> str:
        """One line in the loader's words (offload, blocks_to_swap, tiling): where the DiT's blocks are and the
        memory the job takes at its peak, e.g. "block_swap: 20 of 40 blocks streamed from RAM; about 19 GB of VRAM
        at the peak"."""
        peak = format_size(self.estimated_peak_bytes)
        if self.on_cpu:
            return f"computing on the CPU: about {peak} of RAM at the peak"
        blocks = f"{self.n_blocks} blocks" if self.n_blocks else "blocks"
        if self.blocks_to_swap:
            where = f"block_swap: {self.blocks_to_swap} of {blocks} streamed from RAM"
        else:
            where = f"all_resident: all {blocks} on the GPU"
        text = f"{where}; about {peak} of VRAM at the peak"
        if not self.fits:
            text += f", more than the {format_size(self.usable_bytes)} usable: DOES NOT FIT"
        if self.vae_tile is not None:
            text += f"; VAE tiling {self.vae_tile[0]}x{self.vae_tile[1]} px"
        return text


class HostMemoryError(ValueError):
    """A job whose memory plan does not fit when computing in host memory (no device to swap to): running it would
    end with the operating system killing the process, so it is refused before it starts."""


def require_host_fit(plan: MemoryPlan) -> None:
    """Raise ``HostMemoryError`` (one line: what does not fit, the numbers, what to change) when ``plan`` does
    not fit its budget."""
    if plan.fits:
        return
    raise HostMemoryError(
        f"the job does not fit in host memory: it needs about {plan.estimated_peak_bytes / GIB:.1f} GiB (weights "
        f"{plan.weight_bytes / GIB:.1f} + activations {plan.activation_bytes / GIB:.1f} for {plan.tokens} tokens) "
        f"but {plan.usable_bytes / GIB:.1f} GiB are usable of the {plan.budget_bytes / GIB:.1f} GiB available; "
        "lower max_area or segment_frames, use fp8 / GGUF DiT weights, or close other programs")


def _weights(n: int, swap: int, prefetch: int, per_block: int, other: int, embedding: int, emb_off: bool) -> int:
    streamed = min(swap, prefetch + 1) * per_block if swap else 0
    return other - (embedding if emb_off else 0) + (n - swap) * per_block + streamed


@dataclass(frozen=True)
class ModelSizes:
    """What the planner needs to know of the loaded networks (bytes as stored, packed weights at their size).

    block_bytes: the largest DiT block's weights; n_blocks: DiT blocks; other_bytes: the rest of the DiT
    (embeddings, condition modules, head), of which ``embedding_bytes`` may be streamed like a block; dtype: the
    compute dtype of the activations; dit_config: activation sizes (None = the 14B model); vae_config / vae_dtype /
    vae_bytes: the VAE, for its tiling (vae_config None = no tiling plan).
    """

    block_bytes: int
    n_blocks: int
    other_bytes: int
    embedding_bytes: int = 0
    dtype: torch.dtype = torch.bfloat16
    dit_config: DiTConfig | None = None
    vae_config: object = None
    vae_dtype: torch.dtype = torch.float32
    vae_bytes: int = 0

    def __post_init__(self):
        dtype_bytes(self.dtype)
        if self.n_blocks < 1:
            raise ValueError(f"n_blocks must be >= 1, got {self.n_blocks}")
        sizes = {"block_bytes": self.block_bytes, "other_bytes": self.other_bytes,
                 "embedding_bytes": self.embedding_bytes, "vae_bytes": self.vae_bytes}
        bad = [f"{k}={v}" for k, v in sizes.items() if int(v) < 0]
        if bad:
            raise ValueError(f"sizes must be >= 0 bytes, got {', '.join(bad)}")

    @property
    def config(self) -> DiTConfig:
        return self.dit_config if self.dit_config is not None else DiTConfig()


@dataclass(frozen=True)
class JobShape:
    """One segment: width x height pixels, ``frames`` frames, ``guidance_passes`` DiT passes per step (1-3)."""

    width: int
    height: int
    frames: int
    guidance_passes: int = 2

    def __post_init__(self):
        if min(self.width, self.height, self.frames, self.guidance_passes) < 1:
            raise ValueError(f"width, height, frames and guidance_passes must be >= 1, got "
                             f"{self.width}x{self.height}x{self.frames}, {self.guidance_passes} passes")


@dataclass(frozen=True)
class RankShare:
    """One rank's share of a parallel job (``parallel.ParallelConfig``): ``sequence`` ranks split each forward's
    tokens, ``guidance`` groups split each step's passes, ``shard_blocks``: the DiT blocks are split (FSDP2) over
    the sequence ranks instead of replicated."""

    sequence: int = 1
    guidance: int = 1
    shard_blocks: bool = False

    def __post_init__(self):
        if min(self.sequence, self.guidance) < 1:
            raise ValueError(f"sequence and guidance degrees must be >= 1, got {self.sequence}, {self.guidance}")

    @property
    def parallel(self) -> bool:
        return self.sequence > 1 or self.guidance > 1

    def passes(self, passes: int) -> int:
        """Passes of a step the busiest guidance group runs."""
        return -(-passes // self.guidance)

    def block_bytes(self, per_block: int) -> int:
        """Bytes of one block a rank keeps: all of it, or its 1/sequence shard."""
        return -(-per_block // self.sequence) if self.shard_blocks else per_block

    def describe(self, passes: int) -> str:
        """E.g. "2 guidance groups x 4 sequence ranks: each rank holds a full replica, 1/4 of the tokens, up to 2 of
        3 passes per step"."""
        weights = (f"1/{self.sequence} of each DiT block (FSDP2)" if self.shard_blocks else "a full replica")
        tokens = "all tokens" if self.sequence == 1 else f"1/{self.sequence} of the tokens"
        mine = self.passes(passes)
        share = (f"all {passes} passes" if mine == passes else
                 f"{'' if passes % self.guidance == 0 else 'up to '}{mine} of {passes} passes")
        return f"{self.layout()}: each rank holds {weights}, {tokens}, {share} per step"

    def layout(self) -> str:
        """E.g. "2 guidance groups x 4 sequence ranks"."""
        return (f"{self.guidance} guidance group{'s' * (self.guidance > 1)} x {self.sequence} sequence "
                f"rank{'s' * (self.sequence > 1)}")


@dataclass(frozen=True)
class OffloadRequest:
    """What the user asked for: ``blocks_to_swap`` / ``batch_passes`` "auto" or a forced value; ``prefetch``:
    swapped blocks copied ahead; ``max_vram_gb``: cap on the device memory used (None = the free memory);
    ``context_cache``: keep the DiT's context projections between steps where the memory left over allows;
    ``offload_embeddings``: stream the embeddings like a block (otherwise only when nothing else fits)."""

    blocks_to_swap: int | str = AUTO
    batch_passes: bool | str = AUTO
    prefetch: int = OFFLOAD_DEFAULT_PREFETCH
    max_vram_gb: float | None = None
    context_cache: bool = False
    offload_embeddings: bool = False

    def __post_init__(self):
        if self.prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {self.prefetch}")
        if self.max_vram_gb is not None and not self.max_vram_gb > 0:
            raise ValueError(f"max_vram_gb must be positive, got {self.max_vram_gb}")


def plan_memory(free_vram_bytes: int, sizes: ModelSizes, job: JobShape, request: OffloadRequest = OffloadRequest(),
                device: str = "cuda", share: RankShare = RankShare()) -> MemoryPlan:
    """Choose blocks to swap, guidance batching and VAE tiling for ``free_vram_bytes`` of device memory.

    The cap ``request.max_vram_gb`` applies when lower than the free memory (the explanation says when it is not).
    ``share``: this rank's part of a parallel job (its passes, tokens and, sharded, blocks; sharded blocks are never
    swapped); the explanation starts with the layout. Raises ValueError for a forced ``blocks_to_swap`` outside
    0..n_blocks.
    """
    cfg = sizes.config
    width, height, frames = job.width, job.height, job.frames
    guidance_passes = share.passes(job.guidance_passes)      # the passes this rank's group runs per step
    n_blocks, prefetch, max_vram_gb = sizes.n_blocks, request.prefetch, request.max_vram_gb
    blocks_to_swap, batch_passes = request.blocks_to_swap, request.batch_passes
    dtype, vae_config = sizes.dtype, sizes.vae_config
    notes = []
    budget = int(free_vram_bytes)
    if max_vram_gb is not None:
        cap = int(max_vram_gb * GIB)
        if cap > budget:
            notes.append(f"max_vram_gb {max_vram_gb:g} exceeds the {format_size(budget)} free, using the free memory")
        budget = min(budget, cap)
    usable = max(0, budget - max(OFFLOAD_MIN_RESERVE_BYTES, int(budget * OFFLOAD_RESERVE_FRACTION)))
    per_block, other, emb = int(sizes.block_bytes), int(sizes.other_bytes), int(sizes.embedding_bytes)
    if share.shard_blocks:      # a shard of every block, plus the gathered block running and the next one
        other += 2 * per_block
        per_block = share.block_bytes(per_block)
        if blocks_to_swap not in (AUTO, 0):
            notes.append(f"blocks_to_swap {blocks_to_swap} not used: sharded blocks are not swapped")
        blocks_to_swap = 0

    def peak(swap: int, batched: bool, emb_off: bool) -> tuple[int, int]:
        acts = dit_activation_bytes(cfg, width, height, frames, dtype, guidance_passes if batched else 1,
                                    sequence=share.sequence)
        return _weights(n_blocks, swap, prefetch, per_block, other, emb, emb_off), acts

    def fewest_swaps(batched: bool, emb_off: bool) -> int | None:
        for swap in range(n_blocks + 1):
            if sum(peak(swap, batched, emb_off)) <= usable:
                return swap
        return None

    batch_options = [False] if guidance_passes == 1 else [True, False]
    if batch_passes != AUTO:
        batch_options = [bool(batch_passes) and guidance_passes > 1]
    emb_off = bool(request.offload_embeddings) and emb > 0
    if blocks_to_swap == AUTO:
        found = {b: fewest_swaps(b, emb_off) for b in batch_options}
        if all(v is None for v in found.values()) and emb and not emb_off:
            emb_off = True
            found = {b: fewest_swaps(b, True) for b in batch_options}
        fitting = {b: s for b, s in found.items() if s is not None}
        if fitting:
            # bytes streamed per step: a batched forward streams the swapped blocks once, separate passes each time
            batched = min(fitting, key=lambda b: (fitting[b] * (1 if b else guidance_passes), not b))
            swap = fitting[batched]
        else:
            batched, swap = False, n_blocks
    else:
        swap = int(blocks_to_swap)
        if not 0 <= swap <= n_blocks:
            raise ValueError(f"blocks_to_swap must be in 0..{n_blocks}, got {blocks_to_swap}")
        batched = batch_options[0] if len(batch_options) == 1 else sum(peak(swap, True, emb_off)) <= usable
    weights, acts = peak(swap, batched, emb_off)
    cache_bytes = context_cache_bytes(cfg, dtype, CONTEXT_CACHE_ENTRIES * (guidance_passes if batched else 1))
    cache = bool(request.context_cache) and weights + acts + cache_bytes <= usable
    if cache:
        acts += cache_bytes
    fits = weights + acts <= usable
    prefetch_used = min(prefetch, swap) if swap else prefetch

    # decoding runs with the DiT still placed (its resident blocks), not its activations or streamed blocks
    resident_dit = other - (emb if emb_off else 0) + (n_blocks - swap) * per_block
    vae_budget = max(0, usable - resident_dit - int(sizes.vae_bytes))
    vae_tile, vae_note = None, "VAE untiled"
    if vae_config is not None:
        from ..models.vae_tiling import plan_tiles
        tiles = plan_tiles(vae_config, height, width, sizes.vae_dtype, mode="decode", tile=AUTO,
                           memory_budget=max(vae_budget, 1))
        vae_tile = tiles.tile
        vae_note = "VAE untiled" if vae_tile is None else f"VAE tiles {vae_tile[0]}x{vae_tile[1]} px"

    tokens = dit_tokens(cfg, width, height, frames)
    passes = ("no guidance passes to batch" if guidance_passes == 1 else
              f"{guidance_passes} guidance passes {'batched' if batched else 'one at a time'}")
    head = f"{format_size(budget)} budget ({format_size(usable)} usable)" + (f"; {'; '.join(notes)}" if notes else "")
    if share.parallel:
        head = f"{share.describe(job.guidance_passes)}; {head}"
    explanation = (f"{head}: {width}x{height}x{frames} = {tokens} tokens, {passes}, "
                   f"{swap} of {n_blocks} blocks swapped" + (" + embeddings" if emb_off else "")
                   + f", {vae_note}"
                   + (("; context cache on" if cache else "; context cache off (no room left)")
                      if request.context_cache else "")
                   + f"; est. peak {format_size(weights + acts)} "
                   f"(weights {format_size(weights)} + activations {format_size(acts)})"
                   + ("" if fits else " - DOES NOT FIT"))
    return MemoryPlan(
        device=device, blocks_to_swap=swap, prefetch=prefetch_used, offload_embeddings=emb_off,
        batch_passes=batched, vae_tile=vae_tile, vae_budget_bytes=int(vae_budget), budget_bytes=budget,
        usable_bytes=usable, weight_bytes=weights, activation_bytes=acts, estimated_peak_bytes=weights + acts,
        tokens=tokens, fits=fits, explanation=explanation,
        suggestion=_suggest(swap, n_blocks, batched, fits, budget, weights + acts),
        context_cache=cache, context_cache_bytes=cache_bytes if cache else 0, n_blocks=n_blocks, width=width,
        height=height, frames=frames,
    )


def _suggest(swap: int, n_blocks: int, batched: bool, fits: bool, budget: int, peak: int) -> str:
    steps = []
    if batched:
        steps.append("turn off batched guidance passes")
    if swap < n_blocks:
        steps.append(f"swap more DiT blocks (e.g. {min(n_blocks, swap + max(4, n_blocks // 8))} of {n_blocks})")
    if not fits:
        steps.append(f"the estimate ({format_size(peak)}) exceeds the budget ({format_size(budget)}) even so")
    steps.append("lower the resolution (max area) or the frames per segment, or use fp8/GGUF DiT weights")
    steps.append("close other programs using the GPU")
    return "; ".join(steps) + "."


