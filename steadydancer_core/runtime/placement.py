"""``DevicePolicy``: where a ``SteadyDancerModel`` computes, where its weights wait, and who decides when they move.

Outside a host application the defaults are the core's own: compute on CUDA when it is available (else the CPU),
weights wait in host memory, the free memory is the device's. A host that manages its models (ComfyUI, through
``nodes/comfy_models.py``) passes its own answers:

* ``execution_device`` / ``offload_device`` (DiT) / ``encoder_offload_device`` (VAE, umT5, CLIP): the host's
  devices. An offload device equal to the execution device keeps those weights on it once loaded.
* ``vram``: "normal"; "low" swaps every DiT block when ``offload`` is auto; "none" also streams the embeddings
  and copies no block ahead (the smallest device footprint). An explicit ``offload`` choice is kept.
* ``reserve_bytes``: device memory left to other programs, taken off the free memory before planning.
* ``free_memory(device) -> bytes``: the device's free memory as the host counts it.
* ``free_memory_hook(bytes, device)``: asks the host to evict its own models before the DiT is planned.
* ``auto_dtype(device) -> dtype``: what ``precision="auto"`` means on the execution device (bf16, fp16 or fp32).
* ``load_hook(model, name, working_bytes)``: the host loads component ``name`` (one of ``COMPONENTS``) with
  ``working_bytes`` of working memory next to it, by calling ``offload.load_component(model, name)`` from its own
  loading code, and keeps it loaded until it calls ``offload.unload_component(model, name)`` (to make room for
  another model, or when asked to free memory). Components then stay on the device between uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

VRAM_MODES = ("normal", "low", "none")
COMPONENTS = ("dit", "vae", "text_encoder", "image_encoder")    # the networks of a SteadyDancerModel, by attribute

FreeMemoryHook = Callable[[int, torch.device], None]
"""``hook(bytes_needed, device)``: asks a host application (ComfyUI) to free its own models first."""
LoadHook = Callable[[object, str, int], None]
"""``hook(model, name, working_bytes)``: the host loads component ``name`` of ``model`` (see the module doc)."""
FreeMemory = Callable[[torch.device], int]
"""``free_memory(device) -> bytes``: free memory of ``device`` as the host counts it."""
AutoDtype = Callable[[torch.device], torch.dtype]
"""``auto_dtype(device) -> dtype``: the compute dtype the host picks for ``device``."""
COMPUTE_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def default_device() -> torch.device:
    """The core's own choice outside a host: the current CUDA device when there is one, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def _device(value, what: str) -> torch.device:
    try:
        return torch.device(value)
    except (TypeError, RuntimeError) as err:
        raise ValueError(f"{what} must be a torch device or a device name such as 'cuda' or 'cpu', got {value!r}") \
            from err


@dataclass(frozen=True)
class DevicePolicy:
    """Placement settings of a ``SteadyDancerModel`` (see the module docstring); validated on creation."""

    execution_device: Optional[torch.device] = None        # None: default_device()
    offload_device: torch.device = torch.device("cpu")
    encoder_offload_device: Optional[torch.device] = None  # None: offload_device
    vram: str = "normal"
    reserve_bytes: int = 0
    free_memory: Optional[FreeMemory] = None
    free_memory_hook: Optional[FreeMemoryHook] = None
    load_hook: Optional[LoadHook] = None
    auto_dtype: Optional[AutoDtype] = None

    def __post_init__(self):
        execution = default_device() if self.execution_device is None else _device(self.execution_device,
                                                                                  "execution_device")
        offload = _device(self.offload_device, "offload_device")
        encoders = offload if self.encoder_offload_device is None else _device(self.encoder_offload_device,
                                                                               "encoder_offload_device")
        object.__setattr__(self, "execution_device", execution)
        object.__setattr__(self, "offload_device", offload)
        object.__setattr__(self, "encoder_offload_device", encoders)
        if self.vram not in VRAM_MODES:
            raise ValueError(f"vram must be one of {', '.join(VRAM_MODES)}, got {self.vram!r}")
        if isinstance(self.reserve_bytes, bool) or not isinstance(self.reserve_bytes, int) or self.reserve_bytes < 0:
            raise ValueError(f"reserve_bytes must be an integer >= 0, got {self.reserve_bytes!r}")
        for name in ("free_memory", "free_memory_hook", "load_hook", "auto_dtype"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise ValueError(f"{name} must be callable or None, got {value!r}")

    def compute_dtype(self) -> torch.dtype:
        """The dtype ``precision="auto"`` stands for: the host's ``auto_dtype`` for the execution device, else bf16
        on a CUDA device that has it, fp16 on other CUDA devices, and fp32 elsewhere (bf16 on a CPU is slow)."""
        if self.auto_dtype is not None:
            dtype = self.auto_dtype(self.execution_device)
            if dtype not in COMPUTE_DTYPES:
                raise ValueError(f"auto_dtype must give one of {COMPUTE_DTYPES}, got {dtype!r}")
            return dtype
        if self.execution_device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32

    @property
    def host_managed(self) -> bool:
        """Whether a host loads and unloads the components (``load_hook``), keeping them loaded between uses."""
        return self.load_hook is not None

    def offload_device_of(self, name: str) -> torch.device:
        """Where component ``name``'s weights wait while it is not loaded."""
        return self.offload_device if name == "dit" else self.encoder_offload_device

    def keeps_on_device(self, name: str) -> bool:
        """Whether component ``name`` stays on the execution device once loaded: its offload device is that
        accelerator (e.g. ComfyUI's --gpu-only / --highvram). On the CPU nothing moves, so this is False there."""
        return self.execution_device.type != "cpu" and same_device(self.offload_device_of(name),
                                                                    self.execution_device)


def same_device(a: torch.device, b: torch.device) -> bool:
    """Devices equal by type, and by index where both name one (``cuda`` and ``cuda:0`` on a one-GPU host)."""
    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)
