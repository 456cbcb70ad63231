"""``SteadyDancerModel``: the four networks plus how they are placed, and ``load_model`` to build it from files.

Placement is delegated to ``offload.py``: ``SteadyDancerModel.use(name)`` is the one place the pipeline asks for a
component to be ready on the execution device; it calls ``offload.use_component(model, name)`` (a context manager)
when the model has a memory plan, and does nothing otherwise (the caller placed the networks). The plan comes from
``model_plan.plan_for_model``; devices, free memory and who loads the components come from the model's
``placement.DevicePolicy`` (the core's defaults, or a host's such as ComfyUI's).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from ..loading.loaders import load_dit, load_image_encoder, load_text_encoder, load_vae
from ..loading.quant_ops import set_fp8_matmul
from .compile import compile_blocks
from .model_plan import plan_for_model
from .offload import use_component
from .placement import COMPONENTS, DevicePolicy

PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# "auto": the policy's choice for the execution device (ComfyUI's inside ComfyUI; see DevicePolicy.compute_dtype)
AUTO_PRECISION = "auto"
PRECISION_CHOICES = (*PRECISIONS, AUTO_PRECISION)
# auto: plan from the free VRAM; all_resident: every DiT block stays on the GPU; block_swap: ``blocks_to_swap``
# blocks are streamed from CPU memory.
OFFLOAD_MODES = ("auto", "all_resident", "block_swap")


@dataclass(frozen=True)
class LoaderDefaults:
    """Defaults of the loader's settings (LoadSteadyDancerModel widgets, CLI options of the same names)."""

    precision: str = "bf16"
    attention: str = "sdpa"
    offload: str = "auto"
    blocks_to_swap: int = 20
    max_vram_gb: float = 0.0        # 0 = no cap: the free VRAM
    fp8_matmul: bool = False        # multiply fp8 e4m3 DiT weights in fp8 where the GPU can (else upcast)
    compile: bool = False           # torch.compile of the DiT blocks (runtime/compile.py)


LOADER = LoaderDefaults()


def check_max_vram_gb(value) -> Optional[float]:
    """The VRAM cap in GB: None or 0 -> None (use the free VRAM), a positive number -> float; else ValueError."""
    if value is None or (not isinstance(value, bool) and isinstance(value, (int, float)) and value == 0):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"max_vram_gb must be a positive number of GB (0 = use the free VRAM), got {value!r}")
    return float(value)


def swap_setting(offload: str, blocks_to_swap: int = LOADER.blocks_to_swap):
    """What the memory planner takes for ``offload`` (one of OFFLOAD_MODES): "auto" or the number of DiT blocks to
    swap (0 for all_resident, ``blocks_to_swap`` for block_swap)."""
    if offload not in OFFLOAD_MODES:
        raise ValueError(f"offload must be one of {', '.join(OFFLOAD_MODES)}, got {offload!r}")
    if isinstance(blocks_to_swap, bool) or not isinstance(blocks_to_swap, int) or blocks_to_swap < 0:
        raise ValueError(f"blocks_to_swap must be an integer >= 0, got {blocks_to_swap!r}")
    return {"auto": "auto", "all_resident": 0, "block_swap": blocks_to_swap}[offload]


@dataclass
class SteadyDancerModel:
    """DiT + VAE + umT5 + CLIP-vision handles.

    dit: ``SteadyDancerDiT``; vae: ``WanVAE``; text_encoder: ``TextEncoder``; image_encoder: ``ImageEncoder``;
    dtype: DiT compute dtype; offload_plan: the ``offload.MemoryPlan`` (or None: everything stays where it is);
    device: execution device (None = the policy's when there is a plan, else where the DiT's first parameter
    lives); offload / blocks_to_swap: how the planner places the DiT blocks (see OFFLOAD_MODES); max_vram_gb: cap
    on the device memory the memory planner may use (None or 0 = the free VRAM); policy: the ``DevicePolicy``
    (devices, free memory, host hooks); offloader: the ``offload.Offloader`` moving its tensors (made on first use); fp8_matmul_report: which path the DiT's fp8
    layers take (set when fp8 matmul was asked for; "" otherwise); context_cache: the DiT keeps its context
    projections (embedded text / CLIP context, every block's cross-attention keys and values) while it is in use,
    where the memory plan leaves room (``plan.context_cache``; without a plan: always); compile: the DiT blocks are
    compiled (``compile.py``).
    """

    dit: Any
    vae: Any
    text_encoder: Any
    image_encoder: Any
    dtype: torch.dtype = torch.bfloat16
    offload_plan: Any = None
    device: Optional[torch.device] = None
    lora_reports: tuple = field(default_factory=tuple)
    offload: str = LOADER.offload
    blocks_to_swap: int = LOADER.blocks_to_swap
    max_vram_gb: Optional[float] = None
    fp8_matmul_report: str = ""
    context_cache: bool = True
    compile: bool = False
    policy: DevicePolicy = field(default_factory=DevicePolicy, repr=False)
    parallel: Any = field(default=None, repr=False, compare=False)   # parallel.ParallelRuntime: set by its attach
    offloader: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.dtype not in PRECISIONS.values():
            raise ValueError(f"dtype must be one of {tuple(PRECISIONS.values())}, got {self.dtype}")
        swap_setting(self.offload, self.blocks_to_swap)
        self.max_vram_gb = check_max_vram_gb(self.max_vram_gb)
        if not isinstance(self.policy, DevicePolicy):
            raise ValueError(f"policy must be a DevicePolicy, got {type(self.policy).__name__}")
        if self.compile and getattr(self.dit, "regional_compile", None) is None:
            compile_blocks(self.dit)

    @property
    def execution_device(self) -> torch.device:
        if self.device is not None:
            return torch.device(self.device)
        plan_device = getattr(self.offload_plan, "device", None)
        if plan_device is not None:                 # planned for the policy's execution device
            return torch.device(plan_device)
        for p in self.dit.parameters():
            return p.device
        return torch.device("cpu")

    def use(self, name: str):
        """Context manager: component ``name`` (one of COMPONENTS) is usable on the execution device inside it."""
        if name not in COMPONENTS:
            raise ValueError(f"unknown component {name!r}; one of {COMPONENTS}")
        cache = (name == "dit" and self.context_cache and getattr(self.offload_plan, "context_cache", True)
                 and hasattr(self.dit, "caching_context"))
        if self.offload_plan is None and not cache:
            return contextlib.nullcontext()
        return self._use(name, cache)

    @contextlib.contextmanager
    def _use(self, name: str, cache: bool):
        with contextlib.ExitStack() as stack:
            if self.offload_plan is not None:
                stack.enter_context(use_component(self, name))
            if cache:
                stack.enter_context(self.dit.caching_context())
            yield

    def replan(self, width: int, height: int, frames: int, guidance_passes: int) -> None:
        """Re-plan placement for the real video size (only when the model has a memory plan)."""
        if self.offload_plan is not None:
            self.offload_plan = plan_for_model(self, swap_setting(self.offload, self.blocks_to_swap), width=width,
                                               height=height, frames=frames, guidance_passes=guidance_passes)

    def batch_passes_allowed(self) -> bool:
        """Whether the guidance passes may run as one batched forward (the memory plan decides; default no)."""
        return bool(getattr(self.offload_plan, "batch_passes", False))


def load_model(dit_path, vae_path, t5_path, clip_path, precision: str = LOADER.precision,
               attention: str = LOADER.attention, loras=(), offload: str = LOADER.offload,
               blocks_to_swap: int = LOADER.blocks_to_swap, tokenizer_path=None,
               max_vram_gb=None, fp8_matmul: bool = LOADER.fp8_matmul, compile: bool = LOADER.compile,
               context_cache: bool = True, policy: DevicePolicy | None = None) -> SteadyDancerModel:
    """Load the four networks (on the CPU) and plan their placement.

    precision: DiT/umT5 compute dtype (bf16 | fp16 | fp32, or auto: the policy's choice); attention: DiT attention
    backend; loras: sequence of (path, strength); offload: one of OFFLOAD_MODES, with ``blocks_to_swap`` for
    block_swap; tokenizer_path: umT5 tokenizer when the T5 file carries none (the official .pth); max_vram_gb: cap
    on the VRAM the planner may use (None or 0 = the free VRAM); fp8_matmul: multiply the DiT's fp8 e4m3 weights in
    fp8 (``torch._scaled_mm``) on a GPU of compute capability 8.9+, else they are upcast as without it
    (``fp8_matmul_report`` says which); compile: compile the DiT blocks with torch.compile at the first forward
    (falls back to eager with one warning when no compiler works here); context_cache: keep the DiT's context
    projections between steps where the memory plan leaves room (exact; see ``SteadyDancerModel``); policy: a
    host's ``DevicePolicy`` (None = the defaults: CUDA when available).
    """
    if not isinstance(fp8_matmul, bool):
        raise ValueError(f"fp8_matmul must be True or False, got {fp8_matmul!r}")
    if policy is not None and not isinstance(policy, DevicePolicy):
        raise ValueError(f"policy must be a DevicePolicy, got {type(policy).__name__}")
    max_vram_gb = check_max_vram_gb(max_vram_gb)
    if not isinstance(compile, bool) or not isinstance(context_cache, bool):
        raise ValueError(f"compile and context_cache must be True or False, got {compile!r}, {context_cache!r}")
    swap = swap_setting(offload, blocks_to_swap)
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {PRECISION_CHOICES}, got {precision!r}")
    policy = policy if policy is not None else DevicePolicy()
    dtype = policy.compute_dtype() if precision == AUTO_PRECISION else PRECISIONS[precision]
    dit = load_dit(dit_path, dtype=dtype, attention=attention, loras=tuple(loras))
    vae = load_vae(vae_path)
    text_encoder = load_text_encoder(t5_path, tokenizer=tokenizer_path, dtype=dtype)
    image_encoder = load_image_encoder(clip_path, dtype=torch.float16 if dtype != torch.float32 else torch.float32)
    report = getattr(dit, "lora_report", None)
    model = SteadyDancerModel(dit=dit, vae=vae, text_encoder=text_encoder, image_encoder=image_encoder, dtype=dtype,
                              lora_reports=(report,) if report is not None else (), offload=offload,
                              blocks_to_swap=blocks_to_swap, max_vram_gb=max_vram_gb, context_cache=context_cache,
                              compile=compile, policy=policy)
    model.offload_plan = plan_for_model(model, swap, make_room=False)     # provisional: generate() re-plans
    model.fp8_matmul_report = set_fp8_matmul(dit, fp8_matmul, model.execution_device)
    return model

