"""LoadSteadyDancerModel and SteadyDancerLoRA: pick the model files, one call into ``steadydancer_core.load_model``."""
from __future__ import annotations

from .. import steadydancer_core as sd
from ..steadydancer_core import LOADER
from . import comfy_bridge as bridge
from . import comfy_models
from .types import LORAS_TYPE, MODEL_TYPE, LoraStack

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
                "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01}),
            },
            "optional": {"loras": (LORAS_TYPE, {"tooltip": "LoRAs added before this one."})},
        }

    def add(self, lora_name, strength, loras=None):
        return (_lora_entries(lora_name, strength, loras),)


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
                "precision": (list(sd.PRECISION_CHOICES), {"default": LOADER.precision, "tooltip": (
                    "Compute dtype (auto: ComfyUI's choice for the device). fp8/GGUF weights stay packed.")}),
                "fp8_matmul": ("BOOLEAN", {"default": LOADER.fp8_matmul, "tooltip": (
                    "Multiply the DiT's fp8 e4m3 weights in fp8 (torch._scaled_mm) on GPUs of compute capability "
                    "8.9+ (RTX 40xx, H100 and later); the layer inputs are rounded to fp8 too (scaled per tensor), "
                    "so results differ slightly. Elsewhere, and for e5m2 / nvfp4 / GGUF / fp16 weights, the "
                    "weights are upcast as when off; the text under the node says which path is used.")}),
                "attention": (list(sd.ATTENTION_BACKENDS), {"default": LOADER.attention,
                                               "tooltip": "sdpa works everywhere; the others need their package."}),
                "offload": (list(sd.OFFLOAD_MODES), {"default": LOADER.offload, "tooltip": (
                    "auto: plan from free VRAM; all_resident: keep every block on the GPU; "
                    "block_swap: stream blocks_to_swap blocks from CPU memory.")}),
                "blocks_to_swap": ("INT", {"default": LOADER.blocks_to_swap, "min": 0, "max": 64, "step": 1,
                                           "tooltip": "Used by offload=block_swap."}),
                "max_vram_gb": ("FLOAT", {"default": LOADER.max_vram_gb, "min": 0.0, "max": 1024.0, "step": 0.5, "tooltip": (
                    "Cap on the VRAM the memory planner may use, in GB (e.g. 20 to leave room for other apps). "
                    "0 = use the free VRAM.")}),
                "compile": ("BOOLEAN", {"default": LOADER.compile, "tooltip": (
                    "torch.compile the DiT blocks: the first step compiles (seconds to a minute), later steps run "
                    "faster. Needs triton on CUDA (a C++ compiler on CPU); without one it runs uncompiled and says so "
                    "in the console.")}),
                "lora_name": (bridge.list_files(bridge.LORA_FOLDERS, with_none=True), {
                    "tooltip": bridge.model_tooltip("lora")}),
                "lora_strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01}),
            },
            "optional": {
                "loras": (LORAS_TYPE, {"tooltip": "More LoRAs from SteadyDancerLoRA nodes (applied first)."}),
            },
        }

    def load(self, dit_name, vae_name, t5_name, clip_vision_name, precision, attention, offload, blocks_to_swap,
             max_vram_gb, lora_name, lora_strength, loras=None, fp8_matmul=LOADER.fp8_matmul,
             compile=LOADER.compile):
        stack = _lora_entries(lora_name, lora_strength, loras)
        paths = dict(
            dit_path=bridge.find_model("dit", dit_name),
            vae_path=bridge.find_model("vae", vae_name),
            t5_path=bridge.find_model("t5", t5_name),
            clip_path=bridge.find_model("clip_vision", clip_vision_name),
        )
        model = sd.load_model(**paths, precision=precision, attention=attention, loras=stack.entries,
                                  offload=offload, blocks_to_swap=int(blocks_to_swap),
                                  max_vram_gb=sd.check_max_vram_gb(float(max_vram_gb)),
                                  fp8_matmul=bool(fp8_matmul), compile=bool(compile),
                                  policy=comfy_models.device_policy(comfy_models.PackModels()))
        comfy_models.trim_when_dropped(model)
        return {"result": (model,), "ui": {"text": [describe(model, precision)]}}


def describe(model, precision: str = LOADER.precision) -> str:
    """The loader's UI text: the dtype ``precision`` auto chose, the memory plan made at load time (for a default
    job size: the sampler re-plans for the real job and shows that plan), the fp8 matmul path (when asked for), then
    one line per LoRA file."""
    lines = []
    if precision == sd.AUTO_PRECISION:
        lines.append(f"precision auto: {str(model.dtype).removeprefix('torch.')}")
    if model.offload_plan is not None:
        lines.append(f"memory plan at load time (the sampler re-plans for the real job size): "
                     f"{model.offload_plan.explanation}")
    if model.fp8_matmul_report:
        lines.append(model.fp8_matmul_report)
    loras = [line for report in model.lora_reports for line in report.summary().splitlines() if line]
    lines += [f"LoRA {line}" for line in loras] or ["no LoRA"]
    return "\n".join(lines)


NODE_CLASS_MAPPINGS = {
    "LoadSteadyDancerModel": LoadSteadyDancerModel,
    "SteadyDancerLoRA": SteadyDancerLoRA,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadSteadyDancerModel": "Load SteadyDancer Model",
    "SteadyDancerLoRA": "SteadyDancer LoRA",
}
