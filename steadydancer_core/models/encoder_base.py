"""What the text and image encoder wrappers share: the held network, its device and dtype, and freeing it."""
from __future__ import annotations

import torch
import torch.nn as nn


class EncoderWrapper:
    """Holds a network whose placement is the caller's business (``runtime/offload.py``); inputs follow its weights.

    Subclasses name ``WHAT`` (for messages), ``LOADER`` (the function that loads it again) and ``REFERENCE_WEIGHT``
    (the parameter whose device and dtype are the encoder's).
    """

    WHAT = "encoder"
    LOADER = "the loader"
    REFERENCE_WEIGHT = ""

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config

    def _model(self) -> nn.Module:
        if self.model is None:
            raise RuntimeError(f"this {self.WHAT} was freed; load it again with {self.LOADER}(...)")
        return self.model

    @property
    def device(self) -> torch.device:
        return self._model().get_parameter(self.REFERENCE_WEIGHT).device

    @property
    def dtype(self) -> torch.dtype:
        return self._model().get_parameter(self.REFERENCE_WEIGHT).dtype

    def free(self) -> None:
        """Drop the weights (what does not need them, such as tokenisation, keeps working)."""
        self.model = None
