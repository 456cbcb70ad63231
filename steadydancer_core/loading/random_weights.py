"""``random_dit``: a SteadyDancer DiT with random weights made directly on the target device (benchmarks, GPU checks).

The model is built on the meta device (no memory, no init), cast to the compute dtype there, then allocated once on
``device`` and filled in place by a seeded generator on that device, so a 14B model never touches host memory and
takes seconds on a GPU. ``weights="fp8"`` builds the model with the packed layer ops (as a loader does for an fp8
file) and casts every linear weight of the transformer blocks to float8_e4m3fn with a per-tensor scale (the
"scaled fp8" layout of the released fp8 file: real weight = fp8 * scale), one layer at a time.

Random values: linear / conv weights N(0, 1 / fan_in), biases N(0, 0.02), norm gains N(1, 0.1), the modulation
tables N(0, 1 / dim), so activations stay O(1) through the 40 blocks.
"""
from __future__ import annotations

import torch
from torch import nn

from ..models.dit import SteadyDancerDiT
from ..models.dit_config import DiTConfig
from ..models.ops import PLAIN_OPS
from .quant_ops import PACKED_OPS, PackedLinear

RANDOM_WEIGHTS = ("dense", "fp8")
FP8_MAX = float(torch.finfo(torch.float8_e4m3fn).max)


@torch.no_grad()
def _fill(model: nn.Module, generator: torch.Generator) -> None:
    for name, p in model.named_parameters():
        leaf = name.rpartition(".")[2]
        if leaf == "bias":
            p.normal_(0.0, 0.02, generator=generator)
        elif p.dim() == 1 or "norm" in name:
            p.normal_(1.0, 0.1, generator=generator)
        elif leaf == "modulation":
            p.normal_(0.0, p.shape[-1] ** -0.5, generator=generator)
        else:
            fan_in = max(p[0].numel(), 1)
            p.normal_(0.0, fan_in ** -0.5, generator=generator)


@torch.no_grad()
def _to_fp8(layer: PackedLinear) -> None:
    weight = layer.weight.float()
    scale = (weight.abs().amax() / FP8_MAX).clamp(min=1e-12)
    packed = (weight / scale).to(torch.float8_e4m3fn)
    del weight
    layer.load_packed_weight(packed, scale.reshape(()))


def random_dit(config: DiTConfig | None = None, device="cpu", dtype: torch.dtype = torch.bfloat16,
               weights: str = "dense", attention: str = "sdpa", seed: int = 0) -> SteadyDancerDiT:
    """A random-weight ``SteadyDancerDiT`` (``config`` None = the 14B model) on ``device``, in eval mode.

    dtype: the compute dtype (every dense tensor is stored in it); weights: "dense" or "fp8" (block linears
    float8_e4m3fn, scaled per tensor, kept packed and upcast per layer like a loaded fp8 file).
    """
    if weights not in RANDOM_WEIGHTS:
        raise ValueError(f"weights must be one of {RANDOM_WEIGHTS}, got {weights!r}")
    config = config if config is not None else DiTConfig()
    ops = PACKED_OPS if weights == "fp8" else PLAIN_OPS
    with torch.device("meta"):
        model = SteadyDancerDiT(config, attention_backend=attention, ops=ops).to(dtype)
    model = model.to_empty(device=device)
    _fill(model, torch.Generator(device=device).manual_seed(seed))
    if weights == "fp8":
        for layer in model.blocks.modules():
            if isinstance(layer, PackedLinear):
                _to_fp8(layer)
    return model.eval()
