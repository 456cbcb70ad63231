"""ComfyUI's model management for the pack's models (a host bridge beside ``comfy_bridge``).

* ``device_policy(models)``: the ``DevicePolicy`` ComfyUI's settings give: its device (the CPU under ``--cpu``), its
  offload devices (the GPU itself under ``--gpu-only`` / ``--highvram``), ``--lowvram`` / ``--novram`` as the
  policy's ``vram`` mode (every DiT block swapped / the smallest footprint), ``--reserve-vram`` as the reserve,
  ComfyUI's free-memory count, and its dtype choice for precision "auto" (``should_use_bf16`` / ``_fp16``).
* ``PackModels``: the ComfyUI side of one ``SteadyDancerModel``. Each component (DiT, VAE, umT5, CLIP vision) gets a
  ``ComponentPatcher``, a ``comfy.model_patcher.ModelPatcher`` whose size is what the component takes on the device.
  Right before the core uses a component, the policy's load hook calls ``load_models_gpu([patcher],
  memory_required=...)``: ComfyUI evicts what it must to make room (least recently used first: its own models, or
  another component of the pack) and then calls the patcher's loading, which places the component through the core
  (``load_component``). When ComfyUI unloads the patcher (to make room for another model, ``POST /free``, the
  "Unload models" button) the component goes back to host memory (``unload_component``). Between uses a component
  stays loaded, as ComfyUI keeps its own models.

The ``SteadyDancerModel`` (a node output, held by ComfyUI's cache) owns its ``PackModels`` through its policy's
hooks; the patchers refer back to it weakly, and ComfyUI's list holds the patchers weakly, so dropping the cached
model frees everything. ``trim_when_dropped(model)`` then has the C allocator give the freed pages back to the
system (glibc keeps freed blocks of a few MB in the process otherwise, so the RSS would stay at its peak). Block swap stays the pack's: ComfyUI books the DiT with the size its memory plan puts on the
device (the resident blocks plus the swapped blocks in flight) and its planned activations as working memory; it
never partially loads it (a request to free part of the DiT unloads all of it).
"""
from __future__ import annotations

import threading
import weakref

import comfy.model_management as mm
import torch
import comfy.model_patcher

from .. import steadydancer_core as sd
from ..steadydancer_core.host_memory import trim_host_memory

# ComfyUI's VRAM states that ask for a smaller footprint -> the policy's vram mode.
VRAM_STATES = {"LOW_VRAM": "low", "NO_VRAM": "none"}
# Seconds between a model being dropped and the allocator trim (ComfyUI frees the rest of its cache meanwhile).
TRIM_DELAY_S = 1.0


class ComponentWeights:
    """What ComfyUI's model list holds (weakly) for one component: a light handle named after it. The weights stay in
    the ``SteadyDancerModel``."""

    def __init__(self, name: str):
        self.name = name


class SteadyDancerDiTWeights(ComponentWeights):
    pass


class SteadyDancerVAEWeights(ComponentWeights):
    pass


class SteadyDancerUMT5Weights(ComponentWeights):
    pass


class SteadyDancerCLIPVisionWeights(ComponentWeights):
    pass


HANDLES = {"dit": SteadyDancerDiTWeights, "vae": SteadyDancerVAEWeights, "text_encoder": SteadyDancerUMT5Weights,
           "image_encoder": SteadyDancerCLIPVisionWeights}


class WholePatcher(comfy.model_patcher.ModelPatcher):
    """Something of the pack's that ComfyUI's model management loads and unloads whole (never partially:
    ``partially_unload`` frees nothing, so ComfyUI unloads it whole). It holds its owner weakly; subclasses say
    what it takes on the device (``footprint``), what it holds there now (``held``), and how it loads / unloads."""

    def __init__(self, handle, owner, load_device, offload_device):
        super().__init__(handle, load_device, offload_device)
        self._owner = weakref.ref(owner)

    def owner(self):
        """The pack's object (None once it was dropped)."""
        return self._owner()

    def footprint(self, owner) -> int:
        raise NotImplementedError

    def held(self, owner) -> int:
        raise NotImplementedError

    def load_whole(self, owner) -> None:
        raise NotImplementedError

    def unload_whole(self, owner) -> None:
        raise NotImplementedError

    def copy_for(self, owner) -> "WholePatcher":
        raise NotImplementedError

    def model_size(self):
        owner = self.owner()
        return self.footprint(owner) if owner is not None else 0

    def loaded_size(self):
        owner = self.owner()
        return self.held(owner) if owner is not None else 0

    def current_loaded_device(self):
        return self.load_device if self.loaded_size() > 0 else self.offload_device

    def lowvram_patch_counter(self):
        return 0

    def partially_load(self, device_to, extra_memory=0, force_patch_weights=False):
        """Load the whole thing; returns the bytes added on the device."""
        owner = self.owner()
        if owner is None:
            return 0
        before = self.loaded_size()
        self.load_whole(owner)
        return max(0, self.loaded_size() - before)

    def partially_unload(self, device_to, memory_to_free=0, force_patch_weights=False):
        return 0

    def patch_model(self, device_to=None, lowvram_model_memory=0, load_weights=True, force_patch_weights=False):
        if load_weights and device_to is not None:
            self.partially_load(device_to)
        return self.model

    def unpatch_model(self, device_to=None, unpatch_weights=True):
        owner = self.owner()
        if unpatch_weights and owner is not None:
            self.unload_whole(owner)

    def clone(self):
        owner = self.owner()
        if owner is None:
            raise RuntimeError(f"the SteadyDancer object of this {type(self).__name__} was freed")
        copy = self.copy_for(owner)
        copy.parent = self
        return copy


class ComponentPatcher(WholePatcher):
    """A component of a ``SteadyDancerModel`` as ComfyUI's model management sees it: ``model_size()`` the bytes it
    takes on the device when loaded (``component_footprint``), ``loaded_size()`` what it holds there now
    (``component_device_bytes``); loading and unloading go through the core's offload code (the DiT per its
    memory plan)."""

    def __init__(self, model, name: str, load_device, offload_device):
        if name not in HANDLES:
            raise ValueError(f"unknown component {name!r}; one of {sd.COMPONENTS}")
        super().__init__(HANDLES[name](name), model, load_device, offload_device)
        self.component = name

    def footprint(self, model) -> int:
        return sd.component_footprint(model, self.component)

    def held(self, model) -> int:
        return sd.component_device_bytes(model, self.component)

    def load_whole(self, model) -> None:
        sd.load_component(model, self.component)

    def unload_whole(self, model) -> None:
        sd.unload_component(model, self.component)

    def copy_for(self, model) -> "ComponentPatcher":
        return ComponentPatcher(model, self.component, self.load_device, self.offload_device)


class PackModels:
    """The ComfyUI patchers of one ``SteadyDancerModel`` (made on first use) and the policy hooks that use them."""

    def __init__(self):
        self._patchers: dict = {}

    def patcher(self, model, name: str) -> ComponentPatcher:
        patcher = self._patchers.get(name)
        if patcher is not None and patcher.owner() is not model:
            raise RuntimeError("a DevicePolicy from comfy_models.device_policy serves one SteadyDancerModel; "
                               "make a new PackModels for each model")
        if patcher is None:
            policy = model.policy
            patcher = ComponentPatcher(model, name, policy.execution_device, policy.offload_device_of(name))
            self._patchers[name] = patcher
        return patcher

    def patchers(self) -> list:
        return list(self._patchers.values())

    def load(self, model, name: str, working_bytes: int) -> None:
        """The policy's load hook: ComfyUI makes room for the component and loads it (see the module docstring)."""
        mm.load_models_gpu([self.patcher(model, name)], memory_required=int(working_bytes), force_full_load=True)

    def free_memory(self, nbytes: int, device) -> None:
        """The policy's free-memory hook (before the DiT is planned): ComfyUI unloads its own models until ``nbytes``
        are free; this model's loaded components stay (the planner counts them as free)."""
        ours = [loaded for loaded in mm.current_loaded_models if loaded.model in self.patchers()]
        mm.free_memory(int(nbytes), device, keep_loaded=ours)


def device_policy(models: PackModels) -> sd.DevicePolicy:
    """The placement ComfyUI's settings give (see the module docstring), with ``models``' hooks."""
    return sd.DevicePolicy(
        execution_device=mm.get_torch_device(), offload_device=mm.unet_offload_device(),
        encoder_offload_device=mm.text_encoder_offload_device(),
        vram=VRAM_STATES.get(getattr(mm.vram_state, "name", ""), "normal"),
        reserve_bytes=int(mm.extra_reserved_memory()), free_memory=mm.get_free_memory,
        free_memory_hook=models.free_memory, load_hook=models.load, auto_dtype=auto_dtype,
    )


def auto_dtype(device) -> torch.dtype:
    """ComfyUI's compute dtype for ``device`` (what precision "auto" stands for): bf16 where it says bf16 is good,
    else fp16 where it says fp16 is, else fp32 (e.g. on the CPU)."""
    if mm.should_use_bf16(device):
        return torch.bfloat16
    if mm.should_use_fp16(device):
        return torch.float16
    return torch.float32


def trim_when_dropped(model) -> None:
    """Once ``model`` is freed (ComfyUI dropped its cache), return the freed host memory to the system."""
    weakref.finalize(model, _trim_soon).atexit = False


def _trim_soon() -> None:
    # the finalizer runs before the model's networks are released: trim a moment later, off this thread
    timer = threading.Timer(TRIM_DELAY_S, trim_host_memory)
    timer.daemon = True
    timer.start()
