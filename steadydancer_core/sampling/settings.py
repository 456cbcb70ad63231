"""GenerationSettings: everything that decides a generation besides the model and the images.

Its fields are the rows of ``options.SAMPLER`` and ``options.VAE_TILING`` (same names, defaults, ranges and help as
the sampler node's widgets and the CLI's options; a test keeps the fields and the rows equal), plus three inputs
that are not options: ``sigmas``, ``batch_passes`` and ``preview``. Every value is checked on construction by its
row; the checks between fields follow.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional, Union

import torch

from .defaults import WAN_I2V_NEGATIVE_PROMPT, resolve_shift
from .guidance import Guidance
from .options import SAMPLER, VAE_TILING, vae_tile
from .schedulers import Schedule, make_schedule

__all__ = ["GenerationSettings", "SETTINGS_OPTIONS"]

SETTINGS_OPTIONS = SAMPLER.plus("GenerationSettings", VAE_TILING)   # the rows the fields mirror


def _d(name: str):
    return SETTINGS_OPTIONS.default(name)


@dataclass(frozen=True)
class GenerationSettings:
    """The sampler's options (see ``options.SAMPLER`` for each one's range and meaning), validated.

    sigmas: custom (shifted, descending) sigmas that replace ``steps`` and ``shift``; batch_passes: run the guidance
    passes as one batched forward (None = as the job's memory plan allows); preview: make a preview image per step.
    ``shift`` "auto" is resolved here (3.0 at max_area 399360, else 5.0: the official CLI's rule).
    """

    prompt: str = _d("prompt")
    steps: int = _d("steps")
    text_cfg: float = _d("text_cfg")
    pose_cfg: float = _d("pose_cfg")
    seed: int = _d("seed")
    length: int = _d("length")
    max_area: int = _d("max_area")
    negative_prompt: str = _d("negative_prompt")
    pose_cfg_start: float = _d("pose_cfg_start")
    pose_cfg_end: float = _d("pose_cfg_end")
    shift: Union[float, str] = _d("shift")
    solver: str = _d("solver")
    first_frame: str = _d("first_frame")
    segment_frames: int = _d("segment_frames")
    segment_overlap: int = _d("segment_overlap")
    color_correction: float = _d("color_correction")
    noise: str = _d("noise")
    pose_resize: str = _d("pose_resize")
    step_cache: str = _d("step_cache")
    cache_threshold: float = _d("cache_threshold")
    cache_keep_first: int = _d("cache_keep_first")
    cache_keep_last: int = _d("cache_keep_last")
    cache_max_skip: int = _d("cache_max_skip")
    tiling: str = _d("tiling")
    tile_size: int = _d("tile_size")
    sigmas: Optional[tuple] = None
    batch_passes: Optional[bool] = None
    preview: bool = False

    def __post_init__(self):
        for row in SETTINGS_OPTIONS:
            object.__setattr__(self, row.name, row.check(getattr(self, row.name)))
        object.__setattr__(self, "shift", resolve_shift(self.shift, self.max_area))
        if self.sigmas is not None:  # normalise a tensor / list to a tuple of floats (same values)
            object.__setattr__(self, "sigmas", tuple(float(s) for s in torch.as_tensor(self.sigmas).flatten()))
        Guidance(self.text_cfg, self.pose_cfg, self.pose_cfg_start, self.pose_cfg_end)  # checks the window
        if self.segment_overlap >= self.segment_frames:
            raise ValueError(f"segment_overlap ({self.segment_overlap}) must be smaller than segment_frames "
                             f"({self.segment_frames}), e.g. 9 with 81")
        if self.batch_passes not in (None, True, False) or not isinstance(self.preview, bool):
            raise ValueError("batch_passes must be None, True or False and preview True or False")

    @property
    def guidance(self) -> Guidance:
        return Guidance(self.text_cfg, self.pose_cfg, self.pose_cfg_start, self.pose_cfg_end)

    @property
    def schedule(self) -> Schedule:
        """The sigmas these settings sample with: ``solver``'s schedule of ``steps`` and ``shift``, or the custom
        ``sigmas`` (``make_schedule``); its ``steps`` is the number of steps taken."""
        return make_schedule(self.solver, self.steps, self.shift, self.sigmas)

    @property
    def effective_negative_prompt(self) -> str:
        return self.negative_prompt if self.negative_prompt.strip() else WAN_I2V_NEGATIVE_PROMPT

    @property
    def vae_tile(self):
        """The VAE's tiling argument for these settings (``options.vae_tile``)."""
        return vae_tile(self.tiling, self.tile_size)

    @classmethod
    def option_fields(cls) -> tuple:
        """The fields that are options (all but sigmas, batch_passes and preview)."""
        return tuple(f.name for f in fields(cls) if f.name in SETTINGS_OPTIONS)
