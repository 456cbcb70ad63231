"""The memory plan of a loaded ``SteadyDancerModel``: reads its sizes from the modules and the free memory through
its ``DevicePolicy`` (the host's count when it gives one, after asking it to evict its own models), then calls the
pure ``memory_plan.plan_memory``.
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
    RankShare,
    plan_memory,
    require_host_fit,
)
from .offload import offloader_for
from .sizes import dit_activation_bytes, module_bytes

# What the policy's ``vram`` mode asks of offload="auto": every DiT block swapped ("low"), and also the embeddings
# streamed with no block copied ahead ("none": the smallest device footprint).
VRAM_FORCED = {"low": dict(offload_embeddings=False, prefetch=None), "none": dict(offload_embeddings=True, prefetch=0)}


def typical_size(area: int = DIT_DEFAULT_AREA) -> tuple[int, int]:
    """(width, height) of the job the load-time plan is made for: the sampler's default max_area in the official
    example's 16:9 shape (1024x576), sides multiples of 16."""
    unit = VAE_SPATIAL_STRIDE * 2
    width = max(unit, round((area * 16 / 9) ** 0.5 / unit) * unit)
    return width, max(unit, area // width // unit * unit)


def plan_for_model(model, blocks_to_swap=AUTO, width: int | None = None, height: int | None = None,
                   frames: int = DIT_CLIP_FRAMES, guidance_passes: int = 2,
                   free_vram_bytes: int | None = None, max_vram_gb: float | None = None,
                   device: str | None = None, batch_passes: bool | str = AUTO,
                   make_room: bool = True) -> MemoryPlan:
    """``plan_memory`` for a ``SteadyDancerModel``: sizes read from its modules, free memory from its policy.

    blocks_to_swap: "auto" or a number of DiT blocks to swap (``LoaderSettings.swap``). Width/height default to
    ``typical_size()`` (a typical job: the plan made at load time, before the job's size is known). When nothing moves
    to the device (computing in host memory) nothing is swapped. max_vram_gb: cap on the device memory used; when
    None, the model's own (``settings.max_vram_gb``, e.g. from the node input) applies. device: the policy's
    execution device unless given. The policy's ``vram`` mode "low" / "none" makes "auto" swap every block (see
    ``VRAM_FORCED``); an explicit number is kept, and the explanation says so. make_room: ask the host to evict its
    models for this job first (False: plan with the memory free now, e.g. the plan at load time). A job's plan (make_room) that does not fit in host
    memory when computing there raises ``HostMemoryError``; on a device, a plan that does not fit is kept (its
    explanation says so) and the job runs with what the plan chose.
    """
    if max_vram_gb is None:
        max_vram_gb = model.settings.vram_cap_gb
    policy = model.policy
    dit = model.dit
    if device is None:
        device = policy.execution_device
    if width is None or height is None:
        width, height = typical_size()
    block_attr, embeddings = declared_layout(dit)
    blocks = list(getattr(dit, block_attr))
    per_block = max((module_bytes(b) for b in blocks), default=0)
    total = module_bytes(dit)
    embedding = sum(module_bytes(getattr(dit, n)) for n in embeddings if hasattr(dit, n))
    other = total - sum(module_bytes(b) for b in blocks)
    vae_modules = model.vae if isinstance(model.vae, torch.nn.Module) else None
    swap = blocks_to_swap
    on_device = True
    if free_vram_bytes is None:
        offloader = offloader_for(model, device)
        on_device = offloader.moves
        if on_device:
            wanted = total + dit_activation_bytes(getattr(dit, "config", None) or DiTConfig(), width, height, frames,
                                                  model.dtype, guidance_passes) if make_room else 0
            free_vram_bytes = _device_free_bytes(model, offloader, device, wanted)
        else:                                          # computing in host memory: nothing to swap; the DiT is
            free_vram_bytes = (policy.free_memory(device) if policy.free_memory is not None   # already there
                               else host_available_bytes()) + total
            swap = 0
    forced = VRAM_FORCED.get(policy.vram) if on_device else None
    note = None
    if swap != AUTO and int(swap) > len(blocks):
        note = f"{swap} blocks to swap asked for, the DiT has {len(blocks)}: all of them swapped"
        swap = len(blocks)
    request = dict(blocks_to_swap=swap, batch_passes=batch_passes, max_vram_gb=max_vram_gb,
                   context_cache=model.settings.context_cache)
    if forced is not None and swap == AUTO:
        request.update(blocks_to_swap=len(blocks), offload_embeddings=forced["offload_embeddings"])
        if forced["prefetch"] is not None:
            request["prefetch"] = forced["prefetch"]
        note = f"vram={policy.vram}: every block swapped" + (", embeddings streamed, no prefetch"
                                                             if policy.vram == "none" else "")
    elif forced is not None:
        note = "; ".join(filter(None, [note, f"vram={policy.vram} asks for the smallest footprint; "
                                             f"{_swap_words(blocks_to_swap)} kept as chosen"]))
    sizes = ModelSizes(
        block_bytes=per_block, n_blocks=len(blocks), other_bytes=other, embedding_bytes=embedding, dtype=model.dtype,
        dit_config=getattr(dit, "config", None), vae_config=getattr(model.vae, "config", None),
        vae_dtype=next(model.vae.parameters()).dtype if vae_modules is not None else torch.float32,
        vae_bytes=module_bytes(vae_modules) if vae_modules is not None else 0,
    )
    plan = plan_memory(free_vram_bytes, sizes, JobShape(width, height, frames, guidance_passes),
                       OffloadRequest(**request), device=str(device),
                       share=model.parallel.share if model.parallel is not None else RankShare())
    if not on_device and blocks_to_swap not in (AUTO, 0):
        note = f"computing on the CPU, so {_swap_words(blocks_to_swap)} swaps nothing"
    if note is not None:
        plan = replace(plan, explanation=f"{plan.explanation}; {note}")
    if not on_device and make_room:                   # the job's own plan, in host memory: no swap can save it
        require_host_fit(plan)
    return plan


def _swap_words(blocks_to_swap) -> str:
    """The loader's words for an explicit swap count: "all_resident", "block_swap with 20 blocks"."""
    if blocks_to_swap == 0:
        return "all_resident"
    return f"block_swap with {blocks_to_swap} block" + ("s" if blocks_to_swap != 1 else "")


def _device_free_bytes(model, offloader, device, wanted: int) -> int:
    """Free device memory for planning: the host is asked to free what ``wanted`` bytes need beyond this model's own
    placements (through the policy's hook); those placements count as free (they are re-planned), the policy's
    reserve does not."""
    policy = model.policy
    own = sum(offloader.ledger.placed.values())
    hook = policy.free_memory_hook or offloader.free_memory_hook
    need = max(0, int(wanted) - own) + policy.reserve_bytes
    if hook is not None and wanted > 0:
        hook(need, torch.device(device))
    if policy.free_memory is not None:
        free = int(policy.free_memory(torch.device(device))) + own
    else:
        free = offloader.free_bytes()
        if free is None:
            cuda = torch.device(device).type == "cuda"
            free = torch.cuda.mem_get_info(torch.device(device))[0] if cuda else host_available_bytes()
    return max(0, int(free) - policy.reserve_bytes)


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
