"""LoadSteadyDancerModel and SteadyDancerLoRA: pick the model files, one call into ``steadydancer_core.load_model``."""
from __future__ import annotations

from .. import steadydancer_core as sd
from ..steadydancer_core import LOADER, LORA_STRENGTH
from . import comfy_bridge as bridge
from . import comfy_models
from .reports import loader_report, log_phase
from .types import LORAS_TYPE, MODEL_TYPE, LoraStack
from .widgets import widget, widgets

CATEGORY = "SteadyDancer"


def _lora_entries(lora_name: str, strength: float, loras: LoraStack | None) -> LoraStack:
    stack = loras if loras is not None else LoraStack()
    if lora_name and lora_name != bridge.NONE_CHOICE and strength != 0:
        stack = stack.plus(bridge.find_model("lora", lora_name), strength)
    return stack


class SteadyDancerLoRA:
    """Adds one LoRA with a strength to a LoRA stack (chain several for more)."""

    CATEGORY = CATEGORY
    FUNCTION = "add"
    RETURN_TYPES = (LORAS_TYPE,)
    RETURN_NAMES = ("loras",)
    DESCRIPTION = "Adds a LoRA (models/loras) with a strength. Chain several, then connect to LoadSteadyDancerModel."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "lora_name": (bridge.list_files(bridge.LORA_FOLDERS), {"tooltip": "LoRA file from models/loras."}),
                "strength": widget(LORA_STRENGTH),
            },
            "optional": {"loras": (LORAS_TYPE, {"tooltip": "LoRAs added before this one."})},
        }

    def add(self, lora_name, strength, loras=None):
        return (_lora_entries(lora_name, strength, loras),)


def model_files(dit_name, vae_name, t5_name, clip_vision_name, lora_name, lora_strength, loras) -> sd.ModelFiles:
    """The loader's file choices (names in ComfyUI's model folders) and LoRAs -> ``ModelFiles`` (absolute paths)."""
    return sd.ModelFiles(dit=bridge.find_model("dit", dit_name), vae=bridge.find_model("vae", vae_name),
                         t5=bridge.find_model("t5", t5_name),
                         clip_vision=bridge.find_model("clip_vision", clip_vision_name),
                         loras=_lora_entries(lora_name, lora_strength, loras).entries)


class LoadSteadyDancerModel:
    """Loads the SteadyDancer DiT with the Wan VAE, umT5 text encoder and CLIP-vision encoder."""

    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("model",)
    DESCRIPTION = (
        "Loads SteadyDancer (DiT from models/diffusion_models or models/steadydancer; fp16/bf16, fp8, GGUF) with "
        "the Wan 2.1 VAE (models/vae), umT5-XXL (models/text_encoders) and CLIP-vision ViT-H (models/clip_vision). "
        "Offload 'auto' plans block swapping from the free VRAM."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "dit_name": (bridge.list_files(bridge.DIT_FOLDERS), {"tooltip": bridge.model_tooltip("dit")}),
                "vae_name": (bridge.list_files(bridge.model_folders("vae")), {"tooltip": bridge.model_tooltip("vae")}),
                "t5_name": (bridge.list_files(bridge.model_folders("t5")), {"tooltip": bridge.model_tooltip("t5")}),
                "clip_vision_name": (bridge.list_files(bridge.model_folders("clip_vision")), {
                    "tooltip": bridge.model_tooltip("clip_vision")}),
                **widgets(LOADER),
                "lora_name": (bridge.list_files(bridge.LORA_FOLDERS, with_none=True), {
                    "tooltip": bridge.model_tooltip("lora")}),
                "lora_strength": widget(LORA_STRENGTH),
            },
            "optional": {
                "loras": (LORAS_TYPE, {"tooltip": "More LoRAs from SteadyDancerLoRA nodes (applied first)."}),
            },
        }

    def load(self, dit_name, vae_name, t5_name, clip_vision_name, lora_name, lora_strength, loras=None, **options):
        """``options``: the loader options by name (the rows of ``LOADER`` shown on the node)."""
        files = model_files(dit_name, vae_name, t5_name, clip_vision_name, lora_name, lora_strength, loras)
        settings = sd.LoaderSettings(**options)
        model = sd.load_model(files, settings, policy=comfy_models.device_policy(comfy_models.PackModels()))
        comfy_models.trim_when_dropped(model)
        text = describe(model)
        log_phase("Load SteadyDancer Model", text)
        return {"result": (model,), "ui": {"text": [text]}}


def describe(model) -> str:
    """The loader's report: what was loaded and what a typical job will use (the sampler reports each job's real
    plan), then the plan's detail, the fp8 matmul path (when asked for) and one line per LoRA file."""
    loras = [line for report in model.lora_reports for line in report.summary().splitlines() if line]
    return loader_report(model, loras)


NODE_CLASS_MAPPINGS = {
    "LoadSteadyDancerModel": LoadSteadyDancerModel,
    "SteadyDancerLoRA": SteadyDancerLoRA,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadSteadyDancerModel": "Load SteadyDancer Model",
    "SteadyDancerLoRA": "SteadyDancer LoRA",
}
