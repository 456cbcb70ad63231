"""What sampling needs of a model: ``SamplingModel``, the written interface ``generate`` and the decoders use.

``runtime.SteadyDancerModel`` implements it; tests implement it with toy networks. Sampling never imports the
runtime: it sees the four networks, the execution device, a job's memory plan (``JobPlan``: only what sampling reads
of it) and ``use``, which makes a network usable on the device for a ``with`` block.
"""
from __future__ import annotations

from typing import ContextManager, Optional, Protocol, runtime_checkable

import torch


@runtime_checkable
class JobPlan(Protocol):
    """The part of a memory plan sampling reads: whether the guidance passes may run as one batched forward, and the
    plan's one-line explanation (shown to the user with the result)."""

    batch_passes: bool
    explanation: str


@runtime_checkable
class SamplingModel(Protocol):
    """dit: the SteadyDancer DiT (``models.dit.SteadyDancerDiT`` or one with its forward); vae: the Wan VAE
    (encode / decode of [B, 3, T, H, W] videos in [-1, 1]); text_encoder: ``encode(list of prompts)``;
    image_encoder: ``encode([B, 3, H, W] in [-1, 1])``; parallel: ``runtime.parallel.ParallelRuntime`` when the
    clip runs on several processes (used through ``sampling/parallel_job.py``), else None."""

    dit: torch.nn.Module
    vae: object
    text_encoder: object
    image_encoder: object
    parallel: Optional[object]        # the parallel runtime of a clip run on several processes; None: one process

    @property
    def execution_device(self) -> torch.device:
        """Where the networks compute."""

    def plan_job(self, width: int, height: int, frames: int, guidance_passes: int) -> Optional[JobPlan]:
        """The memory plan of a job of this size (None: the model places nothing itself); returned, not kept."""

    def use(self, name: str, plan: Optional[JobPlan] = None) -> ContextManager:
        """Network ``name`` (dit, vae, text_encoder or image_encoder) usable on the execution device inside the
        ``with`` block, placed per ``plan``."""
