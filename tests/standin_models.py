"""The stand-in host's model management: small ``comfy.model_management`` and ``comfy.model_patcher`` modules with the
semantics of ComfyUI 0.8 that a pack relies on.

Followed from ComfyUI 0.8 (``comfy/model_management.py``, ``comfy/model_patcher.py``):
* ``LoadedModel`` holds its patcher weakly; ``current_loaded_models`` is most recently loaded first.
* ``load_models_gpu(models, memory_required, ..., force_full_load)``: a model already loaded (or a clone of it) is
  taken out of the list and detached without unpatching, memory is freed for ``1.1 x`` what the models still need
  on their device plus the working memory (``max(minimum_inference_memory, memory_required + reserve)``), then each
  model is loaded (``partially_load(device, 1e32)``, or ``0.1`` bytes under NO_VRAM) and put first in the list.
* ``free_memory(bytes, device, keep_loaded)``: unloads models on that device, not in ``keep_loaded``, most
  offloaded first, until the free memory exceeds ``bytes``; a model asked to free less than it holds is first asked
  to unload partially, and unloaded whole when that frees too little.
* ``unload_all_models()`` = ``free_memory(1e30, get_torch_device())``.

Differences, for testing on a CPU-only machine: the host's device is the CPU, with a ``capacity`` (``None`` = no limit)
from which ``get_free_memory`` subtracts what the loaded models hold; with ``cpu_mode`` off (``set_gpu_mode``) it is
managed like a GPU (ComfyUI never frees memory for the CPU device). The pack's core then moves its tensors with its
simulated offloader (distinct copies on the CPU), so loads and unloads are observable. The minimum inference memory
is ``host.minimum_inference_bytes`` (0 by default) instead of 0.8 GB.
"""
from __future__ import annotations

import enum
import sys
import weakref

import torch

UNLIMITED = 1 << 50


class VRAMState(enum.Enum):
    DISABLED = 0
    NO_VRAM = 1
    LOW_VRAM = 2
    NORMAL_VRAM = 3
    HIGH_VRAM = 4
    SHARED = 5


def model_management_module(mm, host):
    """Fill the stand-in ``comfy.model_management`` module ``mm`` (state on ``host``)."""
    mm.VRAMState = VRAMState
    mm.vram_state = VRAMState.DISABLED
    mm.current_loaded_models = []
    host.cpu_mode = True
    host.device = torch.device("cpu")
    host.capacity = None
    host.reserve_bytes = 0
    host.minimum_inference_bytes = 0
    host.gpu_only = False
    host.bf16 = True                     # in GPU mode: should_use_bf16 (else fp16); in CPU mode neither

    def set_gpu_mode(vram_state=VRAMState.NORMAL_VRAM, capacity=None, reserve_bytes=0, gpu_only=False):
        """Manage the device like a GPU of ``capacity`` bytes (``--lowvram`` = LOW_VRAM, ``--reserve-vram``...)."""
        host.cpu_mode, host.capacity, host.reserve_bytes, host.gpu_only = False, capacity, reserve_bytes, gpu_only
        mm.vram_state = VRAMState.HIGH_VRAM if gpu_only else vram_state

    def get_torch_device():
        return host.device

    def extra_reserved_memory():
        return host.reserve_bytes

    def minimum_inference_memory():
        return host.minimum_inference_bytes + extra_reserved_memory()

    def unet_offload_device():
        return host.device if mm.vram_state == VRAMState.HIGH_VRAM else torch.device("cpu")

    def text_encoder_offload_device():
        return host.device if host.gpu_only else torch.device("cpu")

    def get_free_memory(dev=None, torch_free_too=False):
        dev = host.device if dev is None else dev
        held = sum(m.model_loaded_memory() for m in mm.current_loaded_models if m.device == dev and m.model is not None)
        free = (UNLIMITED if host.capacity is None else host.capacity) - held
        return (free, 0) if torch_free_too else free

    class LoadedModel:
        def __init__(self, model):
            self._model = weakref.ref(model)
            self.device = model.load_device
            self.real_model = None
            self.currently_used = True
            self.model_finalizer = None

        @property
        def model(self):
            return self._model()

        def model_memory(self):
            return self.model.model_size()

        def model_loaded_memory(self):
            return self.model.loaded_size()

        def model_offloaded_memory(self):
            return self.model.model_size() - self.model.loaded_size()

        def model_memory_required(self, device):
            if device == self.model.current_loaded_device():
                return self.model_offloaded_memory()
            return self.model_memory()

        def model_load(self, lowvram_model_memory=0, force_patch_weights=False):
            self.model.model_patches_to(self.device)
            self.model.model_patches_to(self.model.model_dtype())
            self.model.partially_load(self.device, lowvram_model_memory or 1e32,
                                      force_patch_weights=force_patch_weights)
            real_model = self.model.model
            self.real_model = weakref.ref(real_model)
            self.model_finalizer = weakref.finalize(real_model, cleanup_models)
            return real_model

        def model_unload(self, memory_to_free=None, unpatch_weights=True):
            if memory_to_free is not None and memory_to_free < self.model.loaded_size():
                if self.model.partially_unload(self.model.offload_device, memory_to_free) >= memory_to_free:
                    return False
            self.model.detach(unpatch_weights)
            self.model_finalizer.detach()
            self.model_finalizer = None
            self.real_model = None
            return True

        def __eq__(self, other):
            return self.model is other.model

        def is_dead(self):
            return self.real_model is not None and self.real_model() is not None and self.model is None

    def free_memory(memory_required, device, keep_loaded=()):
        candidates = []
        for i in range(len(mm.current_loaded_models) - 1, -1, -1):
            loaded = mm.current_loaded_models[i]
            if loaded.device == device and loaded not in keep_loaded and not loaded.is_dead():
                candidates.append((-loaded.model_offloaded_memory(), sys.getrefcount(loaded.model),
                                   loaded.model_memory(), i))
                loaded.currently_used = False
        unloaded = []
        for *_, i in sorted(candidates):
            free = get_free_memory(device)
            if free > memory_required:
                break
            if mm.current_loaded_models[i].model_unload(memory_required - free):
                unloaded.append(i)
        return [mm.current_loaded_models.pop(i) for i in sorted(unloaded, reverse=True)]

    def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False):
        cleanup_models()
        extra = max(minimum_inference_memory(), memory_required + extra_reserved_memory())
        to_load = []
        for patcher in models:
            loaded = LoadedModel(patcher)
            found = [m for m in mm.current_loaded_models if m == loaded]
            to_load.append(found[0] if found else loaded)
        for loaded in to_load:
            for i in range(len(mm.current_loaded_models) - 1, -1, -1):
                if loaded.model.is_clone(mm.current_loaded_models[i].model):
                    gone = mm.current_loaded_models.pop(i)
                    gone.model.detach(unpatch_all=False)
                    gone.model_finalizer.detach()
        required = {}
        for loaded in to_load:
            required[loaded.device] = required.get(loaded.device, 0) + loaded.model_memory_required(loaded.device)
        if not host.cpu_mode:
            for device, nbytes in required.items():
                free_memory(nbytes * 1.1 + extra, device)
        for loaded in to_load:
            budget = 0.1 if mm.vram_state == VRAMState.NO_VRAM and not host.cpu_mode else 0
            loaded.model_load(budget, force_patch_weights=force_patch_weights)
            mm.current_loaded_models.insert(0, loaded)

    def cleanup_models():
        mm.current_loaded_models[:] = [m for m in mm.current_loaded_models
                                       if m.real_model is None or m.real_model() is not None]

    def unload_all_models():
        host.unload_calls += 1
        free_memory(1e30, get_torch_device())

    def loaded_models(only_currently_used=False):
        return [m.model for m in mm.current_loaded_models if m.currently_used or not only_currently_used]

    for fn in (set_gpu_mode, get_torch_device, extra_reserved_memory, minimum_inference_memory, unet_offload_device,
               text_encoder_offload_device, get_free_memory, free_memory, load_models_gpu, cleanup_models,
               unload_all_models, loaded_models):
        setattr(mm, fn.__name__, fn)
    mm.LoadedModel = LoadedModel
    mm.cpu_mode = lambda: host.cpu_mode
    mm.should_use_bf16 = lambda device=None, **kw: not host.cpu_mode and host.bf16
    mm.should_use_fp16 = lambda device=None, **kw: not host.cpu_mode
    mm.soft_empty_cache = lambda force=False: None
    return mm


def model_patcher_module(module):
    """Fill the stand-in ``comfy.model_patcher`` module: a ``ModelPatcher`` base with 0.8's bookkeeping (a native
    model here only books bytes: loading marks ``size`` bytes as on the device)."""

    class ModelPatcher:
        def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
            self.size, self.model = size, model
            if getattr(model, "device", None) is None:
                model.device = offload_device
            self.load_device, self.offload_device = load_device, offload_device
            self.patches, self.backup, self.object_patches, self.pinned = {}, {}, {}, set()
            self.model_options = {"transformer_options": {}}
            self.parent = None
            self.is_injected = False
            for name, value in (("model_loaded_weight_memory", 0), ("lowvram_patch_counter", 0),
                                ("model_lowvram", False)):
                if not hasattr(model, name):
                    setattr(model, name, value)

        def model_size(self):
            return self.size

        def loaded_size(self):
            return self.model.model_loaded_weight_memory

        def lowvram_patch_counter(self):
            return self.model.lowvram_patch_counter

        def current_loaded_device(self):
            return self.model.device

        def model_patches_to(self, device):
            pass

        def model_patches_models(self):
            return []

        def model_dtype(self):
            return self.model.get_dtype() if hasattr(self.model, "get_dtype") else None

        def is_clone(self, other):
            return hasattr(other, "model") and self.model is other.model

        def eject_model(self):
            self.is_injected = False

        def partially_load(self, device_to, extra_memory=0, force_patch_weights=False):
            before = self.model.model_loaded_weight_memory
            self.model.model_loaded_weight_memory = self.model_size()
            self.model.device = device_to
            return self.model.model_loaded_weight_memory - before

        def partially_unload(self, device_to, memory_to_free=0, force_patch_weights=False):
            return 0

        def unpatch_model(self, device_to=None, unpatch_weights=True):
            if unpatch_weights:
                self.model.model_loaded_weight_memory = 0
                if device_to is not None:
                    self.model.device = device_to

        def detach(self, unpatch_all=True):
            self.eject_model()
            self.model_patches_to(self.offload_device)
            if unpatch_all:
                self.unpatch_model(self.offload_device, unpatch_weights=unpatch_all)
            return self.model

        def __del__(self):
            self.detach(unpatch_all=False)

    module.ModelPatcher = ModelPatcher
    return module
