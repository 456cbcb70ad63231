"""What a loaded ``SteadyDancerModel`` is, in the words of the model files: the storage format of each network's
weights ("fp8", "GGUF Q4_K", "bf16") and the one line the loader's report starts with."""
from __future__ import annotations

from collections import Counter

import torch

from ..loading.quant_ops import packed_linears
from .offload import torch_modules

# torch dtypes and packed storage types -> the words of the model file names
FORMAT_WORDS = {"float8_e4m3fn": "fp8", "float8_e5m2": "fp8 e5m2", "bfloat16": "bf16", "float16": "fp16",
                "float32": "fp32", "nvfp4": "nvfp4"}
COMPONENT_WORDS = (("dit", "SteadyDancer"), ("text_encoder", "umT5"), ("vae", "VAE"), ("image_encoder", "CLIP vision"))


def _word(kind: str) -> str:
    if kind in FORMAT_WORDS:
        return FORMAT_WORDS[kind]
    return kind if kind.startswith("float") or kind.startswith("int") else f"GGUF {kind}"


def weights_format(component) -> str:
    """The storage format of a network's weights: the most common packed type of its linears (fp8, nvfp4, GGUF
    Q4_K ...) when it has packed ones, else the dtype holding most of its floating-point bytes ("bf16")."""
    packed = Counter()
    dense = Counter()
    for module in torch_modules(component):
        for layer in packed_linears(module).values():
            packed[layer.qtype] += 1
        for t in module.parameters():
            if t.dtype.is_floating_point:
                dense[str(t.dtype).removeprefix("torch.")] += t.numel() * t.element_size()
    if packed:
        return _word(packed.most_common(1)[0][0])
    return _word(dense.most_common(1)[0][0]) if dense else "?"


def describe_model(model) -> str:
    """"SteadyDancer fp8 + umT5 fp8 + VAE + CLIP vision on cuda:0, computing in bf16": the networks with their
    weight formats (the DiT's and umT5's, which the files choose), the execution device and the compute dtype."""
    parts = []
    for name, word in COMPONENT_WORDS:
        component = getattr(model, name, None)
        parts.append(f"{word} {weights_format(component)}" if name in ("dit", "text_encoder") else word)
    dtype = str(model.dtype).removeprefix("torch.")
    return f"{' + '.join(parts)} on {torch.device(model.execution_device)}, computing in {_word(dtype)}"
