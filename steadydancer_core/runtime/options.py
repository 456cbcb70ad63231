"""The loader's options: ``LOADER`` (one row per option of LoadSteadyDancerModel, the CLI's loading options and
``LoaderSettings``' fields), ``LoaderSettings`` (validated by the rows) and ``ModelFiles`` (the files one load
reads: the four networks, an optional tokenizer and LoRAs with strengths).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Optional

import torch

from ..models.attention import BACKENDS as ATTENTION_BACKENDS
from ..option import Option, OptionTable

__all__ = ["AUTO_PRECISION", "LOADER", "LORA_STRENGTH", "LoaderSettings", "ModelFiles", "OFFLOAD_MODES",
           "PRECISIONS", "PRECISION_CHOICES"]

PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# "auto": the policy's choice for the execution device (ComfyUI's inside ComfyUI; see DevicePolicy.compute_dtype)
AUTO_PRECISION = "auto"
PRECISION_CHOICES = (*PRECISIONS, AUTO_PRECISION)
# auto: plan from the free VRAM; all_resident: every DiT block stays on the GPU; block_swap: ``blocks_to_swap``
# blocks are streamed from CPU memory.
OFFLOAD_MODES = ("auto", "all_resident", "block_swap")

LOADER = OptionTable("Load SteadyDancer Model", [
    Option("precision", "choice", "bf16", choices=PRECISION_CHOICES,
           help="Compute dtype of the DiT and umT5 (auto: ComfyUI's choice for the device; outside ComfyUI bf16 on "
                "a CUDA device that has it, fp16 on other CUDA devices, else fp32). fp8, nvfp4 and GGUF weights "
                "stay packed."),
    Option("fp8_matmul", "bool", False,
           help="Multiply the DiT's fp8 e4m3 weights in fp8 (torch._scaled_mm) on GPUs of compute capability 8.9+ "
                "(RTX 40xx, H100 and later); the layer inputs are rounded to fp8 too, so results differ slightly. "
                "Elsewhere, and for e5m2 / nvfp4 / GGUF / fp16 weights, the weights are upcast as when off; the "
                "report says which path is used."),
    Option("attention", "choice", "sdpa", choices=ATTENTION_BACKENDS,
           help="Attention kernel: sdpa works everywhere; flash-attn and sageattention need their pip package."),
    Option("offload", "choice", "auto", choices=OFFLOAD_MODES,
           help="Where the DiT's blocks live: auto plans from the free VRAM; all_resident keeps every block on the "
                "GPU; block_swap streams blocks_to_swap blocks from system RAM."),
    Option("blocks_to_swap", "int", 20, minimum=0, maximum=64, step=1,
           help="With offload block_swap: how many of the DiT's 40 blocks are streamed from system RAM."),
    Option("max_vram_gb", "float", 0.0, minimum=0.0, maximum=1024.0, step=0.5, unit="GB", zero="the free VRAM",
           help="Cap on the VRAM the memory planner may use, in GB (e.g. 20 to leave room for other programs; "
                "0 = the free VRAM)."),
    Option("compile", "bool", False,
           help="torch.compile the DiT blocks: the first step compiles (seconds to a minute), later steps run "
                "faster. Needs triton on CUDA (a C++ compiler on the CPU); without one it runs uncompiled and says "
                "so."),
    Option("context_cache", "bool", True, fronts=("api",),
           help="Keep the DiT's text / CLIP context projections between steps where the memory plan leaves room "
                "(exact; a small speed-up)."),
])

# the command line takes it inside --lora PATH[:STRENGTH] (cli_options), not as a flag of its own
LORA_STRENGTH = Option("lora_strength", "float", 1.0, minimum=-10.0, maximum=10.0, step=0.01, fronts=("node", "api"),
                       help="Strength of the LoRA (1 = as trained; 0 = not applied).")


def _d(name: str):
    return LOADER.default(name)


@dataclass(frozen=True)
class LoaderSettings:
    """How the four networks are loaded and placed (see ``LOADER`` for each option); validated by the rows.

    ``max_vram_gb`` 0 means "the free VRAM" (``vram_cap_gb`` is then None)."""

    precision: str = _d("precision")
    fp8_matmul: bool = _d("fp8_matmul")
    attention: str = _d("attention")
    offload: str = _d("offload")
    blocks_to_swap: int = _d("blocks_to_swap")
    max_vram_gb: float = _d("max_vram_gb")
    compile: bool = _d("compile")
    context_cache: bool = _d("context_cache")

    def __post_init__(self):
        for row in LOADER:
            object.__setattr__(self, row.name, row.check(getattr(self, row.name)))

    @property
    def vram_cap_gb(self) -> Optional[float]:
        """The planner's VRAM cap in GB, or None for the free VRAM."""
        return self.max_vram_gb or None

    @property
    def swap(self):
        """What the memory planner takes: "auto" or the number of DiT blocks to swap (0 for all_resident)."""
        return {"auto": "auto", "all_resident": 0, "block_swap": self.blocks_to_swap}[self.offload]

    def dtype(self, auto_dtype) -> torch.dtype:
        """The compute dtype; ``auto_dtype()`` answers ``precision`` auto."""
        return auto_dtype() if self.precision == AUTO_PRECISION else PRECISIONS[self.precision]

    @classmethod
    def option_fields(cls) -> tuple:
        return tuple(f.name for f in fields(cls))


def _path(value, what: str) -> str:
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ValueError(f"{what} must be a file path, got {value!r}")
    return os.fspath(value)


@dataclass(frozen=True)
class ModelFiles:
    """The files one load reads: the DiT (a .safetensors / .gguf file or the official folder), the Wan 2.1 VAE, the
    umT5 text encoder, CLIP vision ViT-H, the umT5 tokenizer when the t5 file carries none, and LoRAs as
    (path, strength) pairs applied in order."""

    dit: str
    vae: str
    t5: str
    clip_vision: str
    tokenizer: Optional[str] = None
    loras: tuple = ()

    def __post_init__(self):
        for name in ("dit", "vae", "t5", "clip_vision"):
            object.__setattr__(self, name, _path(getattr(self, name), name))
        if self.tokenizer is not None:
            object.__setattr__(self, "tokenizer", _path(self.tokenizer, "tokenizer"))
        loras = []
        for entry in self.loras:
            if not isinstance(entry, (tuple, list)) or len(entry) != 2:
                raise ValueError(f"loras must be (path, strength) pairs, got {entry!r}")
            loras.append((_path(entry[0], "LoRA"), LORA_STRENGTH.check(entry[1])))
        object.__setattr__(self, "loras", tuple(loras))
