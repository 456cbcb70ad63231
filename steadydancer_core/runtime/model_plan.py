"""The memory plan of a loaded ``SteadyDancerModel``: reads its sizes from the modules and the free memory from the
device (through the offloader, so a host application can evict its own models first), then calls the pure
``memory_plan.plan_memory``.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from ..models.dit_config import DIT_CLIP_FRAMES, DIT_DEFAULT_AREA, DiTConfig
from ..models.vae_config import VAE_SPATIAL_STRIDE
from .block_swap import declared_layout
from .memory_plan import (
    AUTO,
    JobShape,
    MemoryPlan,
    ModelSizes,
    OffloadRequest,
    plan_memory,
)
from .sizes import dit_activation_bytes, module_bytes


def plan_for_model(model, offload=AUTO, width: int | None = None, height: int | None = None,
                   frames: int = DIT_CLIP_FRAMES, guidance_passes: int = 2,
                   free_vram_bytes: int | None = None, max_vram_gb: float | None = None,
                   device: str | None = None, batch_passes: bool | str = AUTO) -> MemoryPlan:
    """``plan_memory`` for a ``SteadyDancerModel``: sizes read from its modules, free memory from the device.

    offload: "auto" | "none" (0 blocks swapped) | a number of blocks to swap. Width/height default to the
    default max area (square-ish); the pipeline re-plans with the real size. On CPU nothing is swapped.
    max_vram_gb: cap on the device memory used; when None, the model's own ``max_vram_gb`` (set at load time,
    e.g. from the node input) applies.
    """
    if max_vram_gb is None:
        max_vram_gb = getattr(model, "max_vram_gb", None)
    dit = model.dit
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if width is None or height is None:
        side = int(DIT_DEFAULT_AREA ** 0.5) // (VAE_SPATIAL_STRIDE * 2) * (VAE_SPATIAL_STRIDE * 2)
        width, height = side, side
    block_attr, embeddings = declared_layout(dit)
    blocks = list(getattr(dit, block_attr))
    per_block = max((module_bytes(b) for b in blocks), default=0)
    total = module_bytes(dit)
    embedding = sum(module_bytes(getattr(dit, n)) for n in embeddings if hasattr(dit, n))
    other = total - sum(module_bytes(b) for b in blocks)
    vae_modules = model.vae if isinstance(model.vae, torch.nn.Module) else None
    swap = 0 if offload == "none" else offload
    if free_vram_bytes is None:
        if torch.device(device).type == "cuda":
            free_vram_bytes = _device_free_bytes(model, device, total + dit_activation_bytes(
                getattr(dit, "config", None) or DiTConfig(), width, height, frames, model.dtype, guidance_passes))
        else:
            free_vram_bytes, swap = host_available_bytes(), 0      # computing in host memory: nothing to swap
    sizes = ModelSizes(
        block_bytes=per_block, n_blocks=len(blocks), other_bytes=other, embedding_bytes=embedding, dtype=model.dtype,
        dit_config=getattr(dit, "config", None), vae_config=getattr(model.vae, "config", None),
        vae_dtype=next(model.vae.parameters()).dtype if vae_modules is not None else torch.float32,
        vae_bytes=module_bytes(vae_modules) if vae_modules is not None else 0,
    )
    request = OffloadRequest(blocks_to_swap=swap, batch_passes=batch_passes, max_vram_gb=max_vram_gb,
                             context_cache=bool(getattr(model, "context_cache", False)))
    plan = plan_memory(free_vram_bytes, sizes, JobShape(width, height, frames, guidance_passes), request,
                       device=str(device))
    if swap != offload and offload not in (AUTO, "none", 0):
        plan = replace(plan, explanation=f"{plan.explanation}; computing on the CPU, so offload={offload} swaps "
                                         f"nothing")
    return plan


def _device_free_bytes(model, device: str, wanted: int) -> int:
    """Free device memory for planning: the host application is asked to free ``wanted`` bytes first (through the
    offloader's hook), and what this model's own placements hold counts as free (they are re-planned)."""
    from .offload import offloader_for

    offloader = offloader_for(model, device)
    if offloader.moves:
        offloader.ask_host_to_free(wanted)
        free = offloader.free_bytes()
        if free is not None:
            return int(free)
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return int(free)


def host_available_bytes(meminfo: str = "/proc/meminfo") -> int:
    """Host memory available to a new allocation without swapping: Linux's MemAvailable (free memory plus the page
    cache and other reclaimable memory, so the plan does not change with what the cache holds); elsewhere the
    physical memory sysconf reports; a large value where the platform says nothing."""
    import os

    try:
        with open(meminfo, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 40
