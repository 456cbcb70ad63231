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

import comfy.model_management as mm
import torch

from .. import steadydancer_core as sd
from ..steadydancer_core import LOADER, PARALLEL
from .comfy_models import WholePatcher
from .model_nodes import LoadSteadyDancerModel, model_files
from .types import MODEL_TYPE
from .widgets import widgets

CATEGORY = "SteadyDancer"


class WorkerHandle:
    """What ComfyUI's model list holds (weakly) for the workers: a light handle; the processes are the model's."""


class WorkersPatcher(WholePatcher):
    """The workers of a ``WorkerModel`` as ComfyUI's model management sees them: ``model_size()`` is what worker 0
    holds on ComfyUI's device; loading starts the workers, unloading stops them (never partially)."""

    def __init__(self, model, load_device, offload_device):
        super().__init__(WorkerHandle(), model, load_device, offload_device)

    def footprint(self, model) -> int:
        return model.device_bytes

    def held(self, model) -> int:
        return model.device_bytes if model.running else 0

    def load_whole(self, model) -> None:
        model.start()

    def unload_whole(self, model) -> None:
        model.stop()

    def copy_for(self, model) -> "WorkersPatcher":
        return WorkersPatcher(model, self.load_device, self.offload_device)


def _book(patcher: WorkersPatcher):
    """The model's ``before_use``: ComfyUI makes room for worker 0 beside its own models and loads the patcher
    (which starts the workers when they are not running)."""
    def before_use(model) -> None:
        mm.load_models_gpu([patcher], memory_required=int(model.working_bytes), force_full_load=True)
    return before_use


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
        unknown = sorted(set(options) - set(LOADER.names) - set(PARALLEL.names))
        if unknown:
            raise TypeError(f"LoadSteadyDancerModelMultiGPU has no option {', '.join(unknown)}; known: "
                            f"{', '.join(LOADER.names + PARALLEL.names)}")
        files = model_files(dit_name, vae_name, t5_name, clip_vision_name, lora_name, lora_strength, loras)
        settings = sd.LoaderSettings(**{k: v for k, v in options.items() if k in LOADER})
        config = sd.parallel_config(**{k: v for k, v in options.items() if k in PARALLEL})
        if config.world_size == 1:
            raise ValueError("LoadSteadyDancerModelMultiGPU: set sequence_parallel or guidance_parallel above 1 "
                             "(their product is the number of GPUs), or use Load SteadyDancer Model for one GPU")
        device = mm.get_torch_device()
        if device.type == "cpu" and torch.cuda.is_available():
            raise ValueError("LoadSteadyDancerModelMultiGPU: ComfyUI runs in CPU mode (--cpu) but its workers would "
                             "take the GPUs; start ComfyUI without --cpu, or use Load SteadyDancer Model")
        model = sd.WorkerModel(files, settings, config)
        patcher = WorkersPatcher(model, device, torch.device("cpu"))
        model.before_use = _book(patcher)
        model.make_ready()
        return {"result": (model,), "ui": {"text": [model.describe()]}}


NODE_CLASS_MAPPINGS = {"LoadSteadyDancerModelMultiGPU": LoadSteadyDancerModelMultiGPU}
NODE_DISPLAY_NAME_MAPPINGS = {"LoadSteadyDancerModelMultiGPU": "Load SteadyDancer Model (several GPUs)"}
