"""Linear layers whose bias and activation ride on the matrix multiply where the CPU allows it.

``linear(x, weight, bias, activation)`` is ``act(F.linear(x, weight, bias))``. For float32 inference on x86 CPUs
with oneDNN (every x86 PyTorch wheel) it is one call to oneDNN's fused linear (``torch.ops.mkldnn._linear_pointwise``,
the op PyTorch's compiler uses for fused CPU linears): the bias and the GELU are applied to each output tile while
it is still in cache instead of in extra passes over the output (measured 5-15 % faster than the BLAS ``addmm``
path on the DiT's shapes on an AMD Zen 4 CPU). The result equals ``F.linear`` up to float32 summation order.
Everywhere else (GPU, half precision, autograd, other CPUs, and code being traced by ``torch.compile``, whose CPU
backend fuses linears itself) it is exactly ``F.linear`` followed by the activation.

``Linear`` is ``nn.Linear`` computed this way (same parameters, same state-dict keys); it is the plain
``ops.Linear`` (``ops.py``). ``GeluMLP`` is the ``Linear -> GELU -> Linear`` stack of the upstream text embedding and
feed-forward layers, state-dict keys ``0.*`` / ``2.*`` as upstream, built from the ``ops`` it is given.
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

# activation name -> (oneDNN post-op, oneDNN algorithm, F.gelu approximate)
ACTIVATIONS = {"gelu": ("gelu", "none", "none"), "gelu_tanh": ("gelu", "tanh", "tanh")}

# Set to False to compute every layer with F.linear (for comparisons); read at call time.
ONEDNN_ENABLED = True


@functools.cache
def onednn_linear_available() -> bool:
    """oneDNN's fused linear exists in this PyTorch build and the CPU is x86 with AVX2 or AVX-512."""
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
            and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"))


def _use_onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    return (ONEDNN_ENABLED and not torch.compiler.is_compiling()
            and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and weight.device.type == "cpu" and weight.is_contiguous()
            and weight.numel() > 0
            and (bias is None or bias.dtype == torch.float32)
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            and onednn_linear_available())


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           activation: str | None = None) -> torch.Tensor:
    """act(x @ weight^T + bias): x [..., in], weight [out, in], bias [out] -> [..., out].

    ``activation``: None, ``"gelu"`` (exact, erf) or ``"gelu_tanh"``.
    """
    if activation is not None and activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)} or None")
    if _use_onednn(x, weight, bias):
        post_op, algorithm = ACTIVATIONS[activation][:2] if activation else ("none", "")
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, post_op, [], algorithm)
    return activate(F.linear(x, weight, bias), activation)


def gelu_name(module: nn.GELU) -> str:
    """``linear`` activation name of an ``nn.GELU`` module."""
    return "gelu_tanh" if module.approximate == "tanh" else "gelu"


def activate(out: torch.Tensor, activation: str | None) -> torch.Tensor:
    """The activation ``linear`` applies, on its own: out [...] -> [...]."""
    return out if activation is None else F.gelu(out, approximate=ACTIVATIONS[activation][2])


def linear_gelu(layer: nn.Module, act: nn.GELU, x: torch.Tensor) -> torch.Tensor:
    """``act(layer(x))``: x [..., in] -> [..., out], one fused call when ``layer`` has ``forward_activation``."""
    fused = getattr(layer, "forward_activation", None)
    if fused is not None:
        return fused(x, gelu_name(act))
    return act(layer(x))


class Linear(nn.Linear):
    """``nn.Linear`` computed by ``linear`` (identical parameters and state-dict keys); x [..., in] -> [..., out]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)

    def forward_activation(self, x: torch.Tensor, activation: str | None) -> torch.Tensor:
        """``act(self(x))`` with the bias and activation fused into the matrix multiply where possible."""
        return linear(x, self.weight, self.bias, activation)


class GeluMLP(nn.Sequential):
    """Linear -> GELU -> Linear; x [..., in_dim] -> [..., out_dim]. The first linear and the GELU are fused.

    ``ops``: the layer factories (``ops.Ops``); None builds the plain ``Linear``.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, approximate: str = "none", ops=None):
        make = Linear if ops is None else ops.Linear
        super().__init__(make(in_dim, hidden_dim), nn.GELU(approximate=approximate), make(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fc1, act, fc2 = self
        return fc2(linear_gelu(fc1, act, x))
