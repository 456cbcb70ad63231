"""``SteadyDancerModel``: the four networks plus how they are placed, and ``load_model`` to build it from files.

The model is what sampling uses through ``sampling.model_interface.SamplingModel``: the networks, the execution
device, ``plan_job`` (a memory plan for one job's size, returned to the caller, never kept on the model) and
``use(name, plan)`` (component ``name`` usable on the execution device, placed per that plan). Placement itself is
``offload.py``'s; the plan comes from ``model_plan.plan_for_model``; devices, free memory and who loads the
components come from the model's ``placement.DevicePolicy`` (the core's defaults, or a host's such as ComfyUI's).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from ..loading.identify import expect_component
from ..loading.loaders import load_dit, load_image_encoder, load_text_encoder, load_vae
from ..loading.quant_ops import set_fp8_matmul
from .compile import compile_blocks
from .memory_plan import MemoryPlan
from .model_plan import plan_for_model
from .launch import fits_straight_onto, join_parallel
from .offload import book_on_device, use_component
from .options import PRECISIONS, LoaderSettings, ModelFiles
from .parallel import ParallelConfig
from .placement import COMPONENTS, DevicePolicy


@dataclass
class SteadyDancerModel:
    """DiT + VAE + umT5 + CLIP-vision, with how they are placed.

    dit: ``SteadyDancerDiT``; vae: ``WanVAE``; text_encoder: ``TextEncoder``; image_encoder: ``ImageEncoder``;
    dtype: DiT compute dtype; settings: the ``LoaderSettings`` it was loaded with (offload, blocks_to_swap,
    max_vram_gb, context_cache, compile...); load_plan: the memory plan made at load time for a typical job (None:
    nothing is placed by the model, the caller placed the networks); device: execution device (None = the policy's
    when there is a plan, else where the DiT's first parameter lives); policy: the ``DevicePolicy``; offloader: the
    ``offload.Offloader`` moving its tensors (made on first use); fp8_matmul_report: which path the DiT's fp8 layers
    take (when fp8 matmul was asked for; "" otherwise); lora_reports: the DiT's ``LoraReport`` (one report, a line
    per LoRA file), or none without LoRAs.
    """

    dit: Any
    vae: Any
    text_encoder: Any
    image_encoder: Any
    dtype: torch.dtype = torch.bfloat16
    settings: LoaderSettings = field(default_factory=LoaderSettings)
    load_plan: Optional[MemoryPlan] = None
    device: Optional[torch.device] = None
    lora_reports: tuple = field(default_factory=tuple)
    fp8_matmul_report: str = ""
    policy: DevicePolicy = field(default_factory=DevicePolicy, repr=False)
    parallel: Any = field(default=None, repr=False, compare=False)   # parallel.ParallelRuntime: set by its attach
    offloader: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.dtype not in PRECISIONS.values():
            raise ValueError(f"dtype must be one of {tuple(PRECISIONS.values())}, got {self.dtype}")
        if not isinstance(self.settings, LoaderSettings):
            raise ValueError(f"settings must be a LoaderSettings, got {type(self.settings).__name__}")
        if not isinstance(self.policy, DevicePolicy):
            raise ValueError(f"policy must be a DevicePolicy, got {type(self.policy).__name__}")
        if self.settings.compile and getattr(self.dit, "regional_compile", None) is None:
            compile_blocks(self.dit)

    @property
    def execution_device(self) -> torch.device:
        if self.device is not None:
            return torch.device(self.device)
        if self.load_plan is not None and self.load_plan.device is not None:   # planned for the policy's device
            return torch.device(self.load_plan.device)
        for p in self.dit.parameters():
            return p.device
        return torch.device("cpu")

    def plan_job(self, width: int, height: int, frames: int, guidance_passes: int) -> Optional[MemoryPlan]:
        """The memory plan for a job of this size (None when the model places nothing: no load plan). The host is
        asked to make room for it first; the plan is returned, not kept."""
        if self.load_plan is None:
            return None
        return plan_for_model(self, self.settings.swap, width=width, height=height, frames=frames,
                              guidance_passes=guidance_passes)

    def use(self, name: str, plan: Optional[MemoryPlan] = None):
        """Context manager: component ``name`` (one of COMPONENTS) is usable on the execution device inside it,
        placed per ``plan`` (a job's; None = the load-time plan)."""
        if name not in COMPONENTS:
            raise ValueError(f"unknown component {name!r}; one of {COMPONENTS}")
        plan = plan if plan is not None else self.load_plan
        cache = (name == "dit" and self.settings.context_cache and (plan is None or plan.context_cache)
                 and hasattr(self.dit, "caching_context"))
        if plan is None and not cache:
            return contextlib.nullcontext()
        return self._use(name, plan, cache)

    @contextlib.contextmanager
    def _use(self, name: str, plan: Optional[MemoryPlan], cache: bool):
        with contextlib.ExitStack() as stack:
            if plan is not None:
                stack.enter_context(use_component(self, name, plan))
            if cache:
                stack.enter_context(self.dit.caching_context())
            yield


def check_model_files(files: ModelFiles) -> None:
    """Raise one ``WeightFileError`` for the first file of ``files`` that does not hold what its slot names (a VAE
    given as the DiT, a plain Wan 2.1 checkpoint, ...), reading only the files' key names: cheap enough to run
    before any long work (``load_model`` checks again while loading)."""
    for path, kind in ((files.dit, "dit"), (files.vae, "vae"), (files.t5, "text_encoder"),
                       (files.clip_vision, "image_encoder")):
        expect_component(path, kind)


def load_model(files: ModelFiles, settings: LoaderSettings | None = None,
               policy: DevicePolicy | None = None, parallel: ParallelConfig | None = None) -> SteadyDancerModel:
    """Load the four networks of ``files`` (on the CPU) with ``settings`` and plan their placement for a typical job
    (``load_plan``; each job is planned again for its real size). policy: a host's ``DevicePolicy`` (None = the
    defaults: CUDA when available).

    parallel: this process is one rank of a clip split over several processes (every rank calls ``load_model``
    with the same arguments, e.g. under ``torchrun``; the process group is started from torchrun's environment
    when it is not yet): the DiT is loaded straight onto the rank's device when it fits there (no host copy;
    ``launch.fits_straight_onto``; else, and with ``shard_blocks``, it is read into host memory as on one GPU),
    only rank 0 loads the VAE and the encoders, and the model's ``parallel`` runtime makes ``generate`` run the
    job on every rank (``runtime/parallel.py``)."""
    if not isinstance(files, ModelFiles):
        raise ValueError(f"files must be a ModelFiles, got {type(files).__name__}")
    settings = LoaderSettings() if settings is None else settings
    if not isinstance(settings, LoaderSettings):
        raise ValueError(f"settings must be a LoaderSettings, got {type(settings).__name__}")
    if policy is not None and not isinstance(policy, DevicePolicy):
        raise ValueError(f"policy must be a DevicePolicy, got {type(policy).__name__}")
    runtime = join_parallel(parallel) if parallel is not None else None
    if policy is None:
        policy = DevicePolicy(execution_device=runtime.device) if runtime is not None else DevicePolicy()
    dtype = settings.dtype(policy.compute_dtype)
    on_device = runtime is not None and not parallel.shard_blocks and fits_straight_onto(files.dit, settings.swap,
                                                                                          policy)
    dit = load_dit(files.dit, dtype=dtype, attention=settings.attention, loras=files.loras,
                   device=policy.execution_device if on_device else None)
    conditioning = runtime is None or runtime.is_conditioning_rank       # the other ranks receive what they make
    vae = load_vae(files.vae) if conditioning else None
    text_encoder = load_text_encoder(files.t5, tokenizer=files.tokenizer, dtype=dtype) if conditioning else None
    image_encoder = load_image_encoder(files.clip_vision, dtype=torch.float16 if dtype != torch.float32
                                       else torch.float32) if conditioning else None
    report = getattr(dit, "lora_report", None)
    model = SteadyDancerModel(dit=dit, vae=vae, text_encoder=text_encoder, image_encoder=image_encoder, dtype=dtype,
                              settings=settings, lora_reports=(report,) if report is not None else (), policy=policy)
    if runtime is not None:
        runtime.attach(model)                 # before planning: the plan counts this rank's share
    if on_device:
        book_on_device(model)                 # placed where it was loaded: the planner counts it, nothing moves
    model.load_plan = plan_for_model(model, settings.swap, make_room=False)
    model.fp8_matmul_report = set_fp8_matmul(dit, settings.fp8_matmul, model.execution_device)
    return model
