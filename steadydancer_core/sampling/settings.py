"""GenerationSettings: everything that decides a generation besides the model and the images, validated on
construction (the sampler node's widgets and the CLI's options build it through ``options.generation_settings``)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import torch

from .defaults import (
    DEFAULT_CONDITION_CFG_END,
    DEFAULT_CONDITION_CFG_START,
    DEFAULT_CONDITION_GUIDE_SCALE,
    DEFAULT_FRAMES_PER_SEGMENT,
    DEFAULT_GUIDE_SCALE,
    DEFAULT_MAX_AREA,
    DEFAULT_POSE_RESIZE,
    DEFAULT_SEGMENT_OVERLAP,
    DEFAULT_SHIFT,
    DEFAULT_SOLVER,
    DEFAULT_STEPS,
    FIRST_FRAME_MODES,
    POSE_RESIZE_MODES,
    SAMPLER,
    SOLVERS,
    WAN_I2V_NEGATIVE_PROMPT,
    check_seed,
    resolve_shift,
)
from .guidance import Guidance
from .noise import DEFAULT_NOISE_SOURCE, NOISE_SOURCES
from .segments import is_4n1
from .step_cache import STEP_CACHE_MODES

__all__ = ["GenerationSettings"]


@dataclass(frozen=True)
class GenerationSettings:
    """Everything that decides a generation besides the model and the images (validated).

    negative_prompt "" = Wan's default I2V negative prompt. length 0 = every pose frame. sigmas (custom, shifted,
    descending) override steps and shift. color_correction: strength 0..1 (True = 1). batch_passes: run the
    guidance passes as one batched forward (None = as the model's memory plan allows). vae_tile: VAE tiling for
    the encodes/decodes done while generating ("auto", False, or a tile size in pixels). shift "auto": the official
    CLI's rule (3.0 at 832x480 / 480x832, i.e. max_area 399360, else 5.0), resolved here. noise: "cpu" (a CPU
    generator, the same video everywhere) or "official" (a generator on the execution device, as the official code).
    pose_resize: "direct" (each pose frame resized once, PIL bicubic, straight to the output size) or "official"
    (PIL bicubic to the photo's size, then torch bicubic to the output size, as the official pipeline; one frame
    at a time either way).
    step_cache: "off", "teacache" or "magcache" (``step_cache.py``): skip the DiT's blocks on steps where the output
    is expected to change little (accumulated estimate < cache_threshold; 0 = never skip), never in the first
    cache_keep_first / last cache_keep_last steps, at most cache_max_skip steps in a row per guidance pass.
    """

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = 0
    steps: int = DEFAULT_STEPS
    solver: str = DEFAULT_SOLVER
    shift: Union[float, str] = DEFAULT_SHIFT
    sigmas: Optional[tuple] = None
    text_cfg: float = DEFAULT_GUIDE_SCALE
    pose_cfg: float = DEFAULT_CONDITION_GUIDE_SCALE
    pose_cfg_window: tuple = (DEFAULT_CONDITION_CFG_START, DEFAULT_CONDITION_CFG_END)
    max_area: int = DEFAULT_MAX_AREA
    length: int = 0
    first_frame: str = "model"
    segment_frames: int = DEFAULT_FRAMES_PER_SEGMENT
    segment_overlap: int = DEFAULT_SEGMENT_OVERLAP
    color_correction: float = 1.0
    batch_passes: Optional[bool] = None
    preview: bool = False
    vae_tile: object = "auto"
    noise: str = DEFAULT_NOISE_SOURCE
    pose_resize: str = DEFAULT_POSE_RESIZE
    step_cache: str = SAMPLER.step_cache
    cache_threshold: float = SAMPLER.cache_threshold
    cache_keep_first: int = SAMPLER.cache_keep_first
    cache_keep_last: int = SAMPLER.cache_keep_last
    cache_max_skip: int = SAMPLER.cache_max_skip

    def __post_init__(self):
        object.__setattr__(self, "shift", resolve_shift(self.shift, self.max_area))
        if self.sigmas is not None:  # normalise a tensor / list to a tuple of floats (same values)
            object.__setattr__(self, "sigmas", tuple(float(s) for s in torch.as_tensor(self.sigmas).flatten()))
        object.__setattr__(self, "pose_cfg_window", tuple(float(v) for v in self.pose_cfg_window))
        object.__setattr__(self, "color_correction", float(self.color_correction))
        if not isinstance(self.prompt, str) or not isinstance(self.negative_prompt, str):
            raise ValueError("prompt and negative_prompt must be strings")
        check_seed(self.seed)
        if self.sigmas is None and (not isinstance(self.steps, int) or self.steps < 1):
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if not self.shift > 0:
            raise ValueError(f"shift must be > 0, got {self.shift}")
        if len(self.pose_cfg_window) != 2 or self.pose_cfg_window[0] > self.pose_cfg_window[1]:
            raise ValueError(f"pose_cfg_window must be (start, end) with start <= end, got {self.pose_cfg_window}")
        Guidance(self.text_cfg, self.pose_cfg, *self.pose_cfg_window)  # validates the scales
        if self.first_frame not in FIRST_FRAME_MODES:
            raise ValueError(f"first_frame must be one of {FIRST_FRAME_MODES}, got {self.first_frame!r}")
        if not isinstance(self.length, int) or self.length < 0:
            raise ValueError(f"length must be an integer >= 0 (0 = every pose frame), got {self.length!r}")
        if not isinstance(self.segment_frames, int) or not is_4n1(self.segment_frames) or self.segment_frames < 5:
            raise ValueError(f"segment_frames must be 4n+1 and >= 5 (e.g. 81), got {self.segment_frames!r}")
        if not isinstance(self.segment_overlap, int) or not is_4n1(self.segment_overlap) \
                or self.segment_overlap >= self.segment_frames:
            raise ValueError(f"segment_overlap must be 4k+1 and smaller than segment_frames ({self.segment_frames}), "
                             f"e.g. 9; got {self.segment_overlap!r}")
        if not 0.0 <= self.color_correction <= 1.0:
            raise ValueError(f"color_correction must be between 0 and 1, got {self.color_correction}")
        if not isinstance(self.max_area, int) or self.max_area < 256:
            raise ValueError(f"max_area must be an integer number of pixels >= 256, got {self.max_area!r}")
        if self.noise not in NOISE_SOURCES:
            raise ValueError(f"noise must be one of {NOISE_SOURCES}, got {self.noise!r}")
        if self.pose_resize not in POSE_RESIZE_MODES:
            raise ValueError(f"pose_resize must be one of {POSE_RESIZE_MODES}, got {self.pose_resize!r}")
        if self.step_cache not in STEP_CACHE_MODES:
            raise ValueError(f"step_cache must be one of {STEP_CACHE_MODES}, got {self.step_cache!r}")
        if isinstance(self.cache_threshold, bool) or not isinstance(self.cache_threshold, (int, float)) \
                or not math.isfinite(self.cache_threshold) or self.cache_threshold < 0:
            raise ValueError(f"cache_threshold must be a finite number >= 0 (0 = never skip), got "
                             f"{self.cache_threshold!r}")
        object.__setattr__(self, "cache_threshold", float(self.cache_threshold))
        for name in ("cache_keep_first", "cache_keep_last", "cache_max_skip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")

    @property
    def guidance(self) -> Guidance:
        return Guidance(self.text_cfg, self.pose_cfg, *self.pose_cfg_window)

    @property
    def effective_negative_prompt(self) -> str:
        return self.negative_prompt if self.negative_prompt.strip() else WAN_I2V_NEGATIVE_PROMPT
