"""Layer factories the networks are built from (the ``operations`` namespace of ComfyUI's model code).

Every linear layer of the DiT, the umT5 encoder and the CLIP vision tower is built as ``ops.Linear(in_features,
out_features, bias=...)``; ``PLAIN_OPS`` builds the fused ``Linear`` of ``fused_linear.py``. A loader that keeps fp8 /
GGUF weights packed passes its own ``Ops`` at construction (``loading/quant_ops.PACKED_OPS``), so no module is
replaced after the model is built.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from .fused_linear import Linear


@dataclass(frozen=True)
class Ops:
    """``Linear``: a class called like ``nn.Linear(in_features, out_features, bias=True)``; x [..., in] -> [..., out]."""

    Linear: type[nn.Linear] = Linear


PLAIN_OPS = Ops()
