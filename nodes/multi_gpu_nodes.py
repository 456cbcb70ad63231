"""LoadSteadyDancerModelMultiGPU: the loader's file choices and options plus the ``PARALLEL`` options; it starts one
worker process per GPU (``steadydancer_core.WorkerModel``) that loads the model once and keeps it between prompts.
Its output is a STEADYDANCER_MODEL like the single-GPU loader's: the sampler runs its jobs on the workers (progress
and Interrupt forwarded), DecodeVideo decodes with worker 0's VAE.

ComfyUI's model management sees the workers as one model (``WorkersPatcher``) on its device, booked with what
worker 0 (on ComfyUI's GPU) holds there: it is loaded (the workers start) before every job, so ComfyUI makes room
on that GPU first, and unloading it (another model needs the room, ``POST /free``, the "Unload models" button)
stops the workers; the next prompt starts them again. Dropping the model (ComfyUI's cache) and ComfyUI's exit stop
them too, and a worker whose ComfyUI is gone exits by itself.
"""
from __future__ import annotations

import weakref

import comfy.model_management as mm
import comfy.model_patcher
import torch

from .. import steadydancer_core as sd
from ..steadydancer_core import LOADER, LORA_STRENGTH, PARALLEL
from . import comfy_bridge as bridge
from .model_nodes import LoadSteadyDancerModel, _lora_entries
from .types import MODEL_TYPE
from .widgets import widgets

CATEGORY = "SteadyDancer"


class WorkerHandle:
    """What ComfyUI's model list holds (weakly) for the workers: a light handle; the processes are the model's."""


class WorkersPatcher(comfy.model_patcher.ModelPatcher):
    """The workers of a ``WorkerModel`` as ComfyUI's model management sees them: ``model_size()`` is what worker 0
    holds on ComfyUI's device; loading starts the workers, unloading stops them (never partially)."""

    def __init__(self, model, load_device, offload_device):
        super().__init__(WorkerHandle(), load_device, offload_device)
        self._owner = weakref.ref(model)

    def owner(self):
        return self._owner()

    def model_size(self):
        model = self.owner()
        return model.device_bytes if model is not None else 0

    def loaded_size(self):
        model = self.owner()
        return model.device_bytes if model is not None and model.running else 0

    def current_loaded_device(self):
        return self.load_device if self.loaded_size() > 0 else self.offload_device

    def lowvram_patch_counter(self):
        return 0

    def partially_load(self, device_to, extra_memory=0, force_patch_weights=False):
        model = self.owner()
        if model is None:
            return 0
        before = self.loaded_size()
        model.start()
        return max(0, self.loaded_size() - before)

    def partially_unload(self, device_to, memory_to_free=0, force_patch_weights=False):
        return 0

    def patch_model(self, device_to=None, lowvram_model_memory=0, load_weights=True, force_patch_weights=False):
        if load_weights and device_to is not None:
            self.partially_load(device_to)
        return self.model

    def unpatch_model(self, device_to=None, unpatch_weights=True):
        model = self.owner()
        if unpatch_weights and model is not None:
            model.stop()

    def clone(self):
        model = self.owner()
        if model is None:
            raise RuntimeError("the SteadyDancer workers of this patcher were freed")
        copy = WorkersPatcher(model, self.load_device, self.offload_device)
        copy.parent = self
        return copy


def _book(patcher: WorkersPatcher):
    """The model's ``before_use``: ComfyUI makes room for worker 0 beside its own models and loads the patcher
    (which starts the workers when they are not running)."""
    def before_use(model) -> None:
        mm.load_models_gpu([patcher], memory_required=int(model.working_bytes), force_full_load=True)
    return before_use


def check_gpus(config) -> None:
    """One GPU per worker on a CUDA machine (ComfyUI's CPU mode runs them on the CPU)."""
    if torch.cuda.is_available() and torch.cuda.device_count() < config.world_size:
        raise ValueError(f"{config.describe()} needs {config.world_size} GPUs but {torch.cuda.device_count()} are "
                         f"visible; lower sequence_parallel / guidance_parallel (their product is the GPU count)")


class LoadSteadyDancerModelMultiGPU:
    """Loads SteadyDancer on several GPUs: one worker process per GPU keeps the model between prompts."""

    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("model",)
    DESCRIPTION = (
        "Like Load SteadyDancer Model, on sequence_parallel x guidance_parallel GPUs: one worker process per GPU "
        "(worker r on GPU r) loads the model once and keeps it until ComfyUI unloads models (Unload models, "
        "/free) or exits. Connect it to the SteadyDancer Sampler as usual."
    )

    @classmethod
    def INPUT_TYPES(cls):
        base = LoadSteadyDancerModel.INPUT_TYPES()
        return {"required": {**base["required"], **widgets(PARALLEL)}, "optional": base["optional"]}

    def load(self, dit_name, vae_name, t5_name, clip_vision_name, lora_name, lora_strength, loras=None, **options):
        """``options``: the loader options and the parallel options by name (rows of ``LOADER`` and ``PARALLEL``)."""
        stack = _lora_entries(lora_name, lora_strength, loras)
        files = sd.ModelFiles(
            dit=bridge.find_model("dit", dit_name), vae=bridge.find_model("vae", vae_name),
            t5=bridge.find_model("t5", t5_name), clip_vision=bridge.find_model("clip_vision", clip_vision_name),
            loras=stack.entries,
        )
        settings = sd.LoaderSettings(**{k: v for k, v in options.items() if k in LOADER})
        config = sd.parallel_config(**{k: v for k, v in options.items() if k in PARALLEL})
        if config.world_size == 1:
            raise ValueError("LoadSteadyDancerModelMultiGPU: set sequence_parallel or guidance_parallel above 1 "
                             "(their product is the number of GPUs), or use Load SteadyDancer Model for one GPU")
        check_gpus(config)
        model = sd.WorkerModel(files, settings, config)
        patcher = WorkersPatcher(model, mm.get_torch_device(), torch.device("cpu"))
        model.before_use = _book(patcher)
        model.make_ready()
        return {"result": (model,), "ui": {"text": [model.describe()]}}


NODE_CLASS_MAPPINGS = {"LoadSteadyDancerModelMultiGPU": LoadSteadyDancerModelMultiGPU}
NODE_DISPLAY_NAME_MAPPINGS = {"LoadSteadyDancerModelMultiGPU": "Load SteadyDancer Model (several GPUs)"}
