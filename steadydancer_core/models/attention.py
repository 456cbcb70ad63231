"""One attention function with interchangeable backends.

``attention(q, k, v, backend)`` takes and returns ``[B, L, heads, head_dim]`` tensors (the Wan layout).

Backends:
  * ``"sdpa"`` (default): ``torch.nn.functional.scaled_dot_product_attention``; CPU-safe, any dtype, supports an
    additive ``bias`` on the keys.
  * ``"flash-attn"``: ``flash_attn.flash_attn_func`` (pip package ``flash-attn``); CUDA, fp16/bf16 only (fp32
    inputs are computed in bf16 and cast back).
  * ``"sageattention"``: ``sageattention.sageattn`` (pip package ``sageattention``); CUDA, fp16/bf16 only.

Nothing is imported until a backend is first used; asking for an absent one raises ``AttentionBackendError``
naming the pip package to install.
"""
from __future__ import annotations

import importlib
import importlib.util

import torch
import torch.nn.functional as F

# backend name -> (python module, pip package)
_OPTIONAL_BACKENDS = {
    "flash-attn": ("flash_attn", "flash-attn"),
    "sageattention": ("sageattention", "sageattention"),
}
BACKENDS = ("sdpa",) + tuple(_OPTIONAL_BACKENDS)
_HALF = (torch.float16, torch.bfloat16)


class AttentionBackendError(RuntimeError):
    """The requested attention backend is unknown or not installed."""


def available_backends() -> list[str]:
    """Backends usable in this environment (``"sdpa"`` always; the others when their package is installed)."""
    found = ["sdpa"]
    for name, (module, _) in _OPTIONAL_BACKENDS.items():
        if importlib.util.find_spec(module) is not None:
            found.append(name)
    return found


def check_backend(backend: str) -> None:
    """Raise ``AttentionBackendError`` with the fix when ``backend`` cannot be used here."""
    if backend == "sdpa":
        return
    if backend not in _OPTIONAL_BACKENDS:
        raise AttentionBackendError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    module, package = _OPTIONAL_BACKENDS[backend]
    if importlib.util.find_spec(module) is None:
        raise AttentionBackendError(
            f"attention backend {backend!r} is not installed: run `pip install {package}` in ComfyUI's Python "
            f"environment, or choose 'sdpa' (available here: {', '.join(available_backends())})")


def _sdpa(q, k, v, bias):
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=bias)
    return out.transpose(1, 2)


def _half_inputs(q, k, v):
    dtype = q.dtype if q.dtype in _HALF else torch.bfloat16
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _flash_attn(q, k, v):
    flash_attn = importlib.import_module("flash_attn")
    out_dtype = q.dtype
    q, k, v = _half_inputs(q, k, v)
    return flash_attn.flash_attn_func(q, k, v).to(out_dtype)


def _sageattention(q, k, v):
    sageattention = importlib.import_module("sageattention")
    out_dtype = q.dtype
    q, k, v = _half_inputs(q, k, v)
    return sageattention.sageattn(q, k, v, tensor_layout="NHD", is_causal=False).to(out_dtype)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa",
              bias: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention, scale 1/sqrt(head_dim), no mask.

    q: [B, Lq, H, D]; k, v: [B, Lk, H, D] -> [B, Lq, H, D] in q's dtype.
    bias: optional additive logits broadcastable to [B, H, Lq, Lk] (``"sdpa"`` only), e.g. log-multiplicities of
    keys that stand for several identical keys.
    """
    if backend == "sdpa":
        return _sdpa(q, k, v, bias)
    check_backend(backend)
    if bias is not None:
        raise AttentionBackendError(f"backend {backend!r} takes no attention bias; use 'sdpa' for biased attention")
    if backend == "flash-attn":
        return _flash_attn(q, k, v)
    return _sageattention(q, k, v)
