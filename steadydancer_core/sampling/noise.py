"""The initial noise of every segment: where its random numbers come from.

* ``cpu`` (default): one CPU ``torch.Generator`` seeded with the seed. The same seed gives the same noise, hence
  the same video, on every machine and device (CPU, CUDA, MPS).
* ``official``: what the official ``WanI2VDancer.generate()`` does: a generator on the execution device seeded
  with the seed, the noise drawn there in float32. On a CUDA device this is CUDA's Philox generator, so a CUDA user
  gets the official CLI's noise for the same seed (and a different video than with ``cpu``); on a CPU device the
  two modes are identical.

Segments after the first keep drawing from the same generator, in order.
"""
from __future__ import annotations

import torch

NOISE_SOURCES = ("cpu", "official")


class NoiseSource:
    """``draw(shape)`` -> float32 standard normal noise; consecutive draws continue one seeded generator."""

    def __init__(self, mode: str, seed: int, device=None):
        if mode not in NOISE_SOURCES:
            raise ValueError(f"noise must be one of {NOISE_SOURCES}, got {mode!r}")
        self.mode = mode
        self.device = torch.device("cpu") if mode == "cpu" or device is None else torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed))

    def draw(self, shape) -> torch.Tensor:
        return torch.randn(*shape, dtype=torch.float32, generator=self.generator, device=self.device)
