"""Step caching in the style of TeaCache and MagCache: on steps where the DiT's output is expected to change little,
the block stack is skipped and the residual it added at the last computed step (block-stack output minus input,
before the head) is added again, separately for every guidance pass.

This module is only the policy and the residual store; ``pipeline._make_predictor`` asks ``decide`` before each
pass and hands the DiT a ``block_stack`` hook that records or reuses the residual. The embeddings (patch, pose
modules, text, CLIP) and the head still run on a skipped pass: only the blocks (nearly all of the cost) are skipped.

Methods (``mode``), each with its published calibration for Wan 2.1 I2V-14B (480p and 720p checkpoints):

* ``teacache``: the relative L1 change of the timestep modulation ``e0 = time_projection(time_embedding(t))``
  between consecutive steps, rescaled by a fitted polynomial to an estimate of the output's change, is
  accumulated; while the sum stays below ``threshold`` the pass is skipped, when it reaches it the pass is computed
  and the sum restarts at 0 (TeaCache's "retention steps" variant, which uses ``e0``).
* ``magcache``: the calibrated mean ratio of consecutive residual norms ``|r_i| / |r_(i-1)|`` is multiplied up
  since the last computed step; the accumulated error ``sum |1 - product|`` is compared with ``threshold``.
  The 40-step tables are resampled (nearest) to other step counts, as MagCache does.

Guards common to both: the first ``keep_first`` and the last ``keep_last`` steps are always computed, so is a
pass's first step (nothing cached yet) and a step after one where the pass did not run (its residual is stale); at
most ``max_skip`` steps in a row are skipped per pass (0 = never skip). ``threshold`` 0 never skips.

SteadyDancer's weights are a fine-tune of Wan 2.1 I2V-14B with extra pose inputs, so these calibrations are
approximations for it; whether a threshold keeps the quality can only be judged on videos made with the real
weights. The third guidance pass (negative pose) uses the conditional pass's MagCache ratios.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from .defaults import STEP_CACHE_MODES
from .guidance import UNCOND_TEXT

CALIBRATIONS = ("480p", "720p")
CALIBRATION_AREAS = {"480p": 832 * 480, "720p": 1280 * 720}

# TeaCache rescaling polynomials (numpy.poly1d order: highest power first) for the e0 indicator, Wan 2.1 I2V-14B.
# Source: ali-vilab/TeaCache, TeaCache4Wan2.1/teacache_generate.py, the ``use_ret_steps`` coefficients of the
# i2v-14B 480P and 720P checkpoints (the same numbers are in Zehong-Ma/MagCache
# eval/magcache/experiments/Wan2.1_EVAL/wan_teacache.py and in DiffSynth-Studio's TeaCache table).
TEACACHE_WAN21_I2V_E0 = {
    "480p": (2.57151496e+05, -3.54229917e+04, 1.40286849e+03, -1.35890334e+01, 1.32517977e-01),
    "720p": (8.10705460e+03, 2.13393892e+03, -3.72934672e+02, 1.66203073e+01, -4.17769401e-02),
}

# MagCache mean residual-norm ratios for 40 steps, interleaved (conditional, unconditional) per step; the first
# step's pair is padding (1.0). Source: Zehong-Ma/MagCache, MagCache4Wan2.1/magcache_generate.py, ``mag_ratios``
# of the Wan2.1 I2V-14B 480P and 720P checkpoints (calibrated there with UniPC, 40 steps, text CFG 5).
MAGCACHE_WAN21_I2V = {
    "480p": (1.0, 1.0, 0.98783, 0.98993, 0.97559, 0.97593, 0.98311, 0.98319, 0.98202, 0.98225, 0.9888, 0.98878,
             0.98762, 0.98759, 0.98957, 0.98971, 0.99052, 0.99043, 0.99383, 0.99384, 0.98857, 0.9886, 0.99065,
             0.99068, 0.98845, 0.98847, 0.99057, 0.99057, 0.98957, 0.98961, 0.98601, 0.9861, 0.98823, 0.98823,
             0.98756, 0.98759, 0.98808, 0.98814, 0.98721, 0.98724, 0.98571, 0.98572, 0.98543, 0.98544, 0.98157,
             0.98165, 0.98411, 0.98413, 0.97952, 0.97953, 0.98149, 0.9815, 0.9774, 0.97742, 0.97825, 0.97826,
             0.97355, 0.97361, 0.97085, 0.97087, 0.97056, 0.97055, 0.96588, 0.96587, 0.96113, 0.96124, 0.9567,
             0.95681, 0.94961, 0.94969, 0.93973, 0.93988, 0.93217, 0.93224, 0.91878, 0.91896, 0.90955, 0.90954,
             0.92617, 0.92616),
    "720p": (1.0, 1.0, 0.99428, 0.99498, 0.98588, 0.98621, 0.98273, 0.98281, 0.99018, 0.99023, 0.98911, 0.98917,
             0.98646, 0.98652, 0.99454, 0.99456, 0.9891, 0.98909, 0.99124, 0.99127, 0.99102, 0.99103, 0.99215,
             0.99212, 0.99515, 0.99515, 0.99576, 0.99572, 0.99068, 0.99072, 0.99097, 0.99097, 0.99166, 0.99169,
             0.99041, 0.99042, 0.99201, 0.99198, 0.99101, 0.99101, 0.98599, 0.98603, 0.98845, 0.98844, 0.98848,
             0.98851, 0.98862, 0.98857, 0.98718, 0.98719, 0.98497, 0.98497, 0.98264, 0.98263, 0.98389, 0.98393,
             0.97938, 0.9794, 0.97535, 0.97536, 0.97498, 0.97499, 0.973, 0.97301, 0.96827, 0.96828, 0.96261,
             0.96263, 0.95335, 0.9534, 0.94649, 0.94655, 0.93397, 0.93414, 0.91636, 0.9165, 0.89088, 0.89109,
             0.8679, 0.86768),
}
MAGCACHE_STEPS = 40


def calibration_for(area: int) -> str:
    """The calibration whose checkpoint resolution is nearest to ``area`` pixels per frame (480p or 720p)."""
    return min(CALIBRATIONS, key=lambda name: abs(math.log(area / CALIBRATION_AREAS[name])))


def resample_nearest(values: tuple, length: int) -> tuple:
    """``values`` resampled to ``length`` entries by nearest index (MagCache's rule; the last one for length 1)."""
    if length == 1:
        return (values[-1],)
    scale = (len(values) - 1) / (length - 1)
    return tuple(values[round(i * scale)] for i in range(length))


def magcache_ratios(calibration: str, steps: int) -> tuple[tuple, tuple]:
    """(conditional, unconditional) residual-norm ratios per step for ``steps`` steps."""
    table = MAGCACHE_WAN21_I2V[calibration]
    cond, uncond = table[0::2], table[1::2]
    if steps != MAGCACHE_STEPS:
        cond, uncond = resample_nearest(cond, steps), resample_nearest(uncond, steps)
    return cond, uncond


def relative_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    """mean |current - previous| / mean |previous| (TeaCache's indicator distance)."""
    return float((current - previous).abs().mean() / previous.abs().mean().clamp_min(1e-12))


def polyval(coefficients: tuple, x: float) -> float:
    """Polynomial with ``coefficients`` highest power first, at x."""
    out = 0.0
    for c in coefficients:
        out = out * x + c
    return out


@dataclass
class _PassState:
    residual: Optional[torch.Tensor] = None   # [keep, D] float32, host memory
    last_step: int = -2                       # last step this pass ran (computed or skipped)
    run: int = 0                              # skipped steps in a row
    distance: float = 0.0                     # TeaCache: accumulated rescaled distance
    indicator: Optional[torch.Tensor] = None  # TeaCache: e0 at the pass's last step
    ratio: float = 1.0                        # MagCache: product of ratios since the last computed step
    error: float = 0.0                        # MagCache: accumulated |1 - ratio|


@dataclass
class StepCache:
    """Skip/compute decisions and the cached residuals of one denoising run (one segment), per guidance pass.

    mode "teacache" needs ``indicator(t) -> e0`` (the DiT's timestep modulation for timestep t, any shape); it is
    called once per step. ``decide(step, t, pass_name)`` -> True when the pass may reuse its cached residual.
    ``store`` keeps a pass's new residual [keep, D] (on the host, float32); ``residual`` returns it.
    ``computed`` / ``skipped`` count the pass decisions.
    """

    mode: str
    threshold: float
    keep_first: int
    keep_last: int
    max_skip: int
    steps: int
    calibration: str = "480p"
    indicator: Optional[Callable[[int], torch.Tensor]] = None
    computed: int = 0
    skipped: int = 0
    decisions: list = field(default_factory=list)   # (step, pass, skipped)

    def __post_init__(self):
        if self.mode not in STEP_CACHE_MODES[1:]:
            raise ValueError(f"step cache mode must be one of {STEP_CACHE_MODES[1:]}, got {self.mode!r}")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {self.calibration!r}")
        if self.mode == "teacache" and self.indicator is None:
            raise ValueError("teacache needs the DiT's timestep modulation (indicator)")
        self._passes: dict = {}
        self._step_indicator: tuple = (None, None)
        self._ratios = magcache_ratios(self.calibration, self.steps) if self.mode == "magcache" else None
        self._coefficients = TEACACHE_WAN21_I2V_E0[self.calibration]

    def decide(self, step: int, t: int, pass_name: str) -> bool:
        state = self._passes.setdefault(pass_name, _PassState())
        guarded = (step < self.keep_first or step >= self.steps - self.keep_last or state.residual is None
                   or state.last_step != step - 1 or self.threshold <= 0 or self.max_skip <= 0)
        skip = False
        if self.mode == "teacache":
            indicator = self._indicator_at(step, t)
            if not guarded:
                state.distance += max(polyval(self._coefficients, relative_l1(indicator, state.indicator)), 0.0)
                skip = state.distance < self.threshold and state.run < self.max_skip
            state.indicator = indicator
        elif not guarded:
            ratio = self._ratios[1 if pass_name == UNCOND_TEXT else 0][step]
            state.ratio *= ratio
            state.error += abs(1.0 - state.ratio)
            skip = state.error < self.threshold and state.run + 1 <= self.max_skip
        if skip:
            state.run += 1
            self.skipped += 1
        else:
            state.run, state.distance, state.ratio, state.error = 0, 0.0, 1.0, 0.0
            self.computed += 1
        state.last_step = step
        self.decisions.append((step, pass_name, skip))
        return skip

    def _indicator_at(self, step: int, t: int) -> torch.Tensor:
        if self._step_indicator[0] != step:
            self._step_indicator = (step, self.indicator(t).detach().float().cpu())
        return self._step_indicator[1]

    def store(self, pass_name: str, residual: torch.Tensor) -> None:
        self._passes[pass_name].residual = residual.detach().float().cpu()

    def residual(self, pass_name: str) -> torch.Tensor:
        return self._passes[pass_name].residual


def make_step_cache(mode: str, threshold: float, keep_first: int, keep_last: int, max_skip: int, steps: int,
                    area: int, indicator=None) -> Optional[StepCache]:
    """A StepCache for one denoising run, or None when ``mode`` is "off" or the threshold is 0 (nothing could be
    skipped: the sampling is then exactly the uncached one)."""
    if mode == "off" or threshold <= 0 or max_skip <= 0:
        return None
    return StepCache(mode=mode, threshold=threshold, keep_first=keep_first, keep_last=keep_last, max_skip=max_skip,
                     steps=steps, calibration=calibration_for(area), indicator=indicator)
