"""Dual guidance (text CFG + pose-condition CFG inside a step window) and the guided denoising loop.

Per step ``idx`` of ``N`` the official SteadyDancer sampler forms::

    pred = u + text_cfg * (c - u)                             outside the window
    pred = u + text_cfg * (c - u) + pose_cfg * (c - uc)       if start < idx/N < end   (both strict)

with ``c`` = conditional prediction, ``u`` = prediction with the negative prompt, ``uc`` = prediction with the
negative (augmented) pose condition; start / end = ``pose_cfg_start`` / ``pose_cfg_end`` (the official code calls
the scales ``guide_scale`` / ``condition_guide_scale``). A pass whose term cannot change the result is not run: the
negative-prompt pass when ``text_cfg == 1`` (``u + 1*(c - u) == c``) and the negative-pose pass when
``pose_cfg == 0`` or outside the window. (``pose_cfg == 1`` is *not* neutral in this formula: the official runs the
pass and adds ``c - uc``.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from .schedulers import Schedule

COND = "cond"                        # positive prompt, positive pose
UNCOND_TEXT = "uncond_text"          # negative prompt, positive pose
UNCOND_CONDITION = "uncond_condition"  # positive prompt, negative (augmented) pose


class Cancelled(RuntimeError):
    """Raised between sampling steps when the caller asked to stop."""


class NonFiniteLatentError(FloatingPointError, ValueError):
    """The latent became NaN or infinite during sampling; the message names the step, the likely causes and their
    fixes. A ValueError too, so front ends report it as the one-line user error it is."""


@dataclass(frozen=True)
class Guidance:
    """The text and pose guidance scales and the pose-guidance window (fractions of the step count)."""

    text_cfg: float
    pose_cfg: float
    pose_cfg_start: float
    pose_cfg_end: float

    def __post_init__(self):
        for name in ("text_cfg", "pose_cfg", "pose_cfg_start", "pose_cfg_end"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"guidance {name} must be a finite number, got {value!r}")
        if self.text_cfg < 0 or self.pose_cfg < 0:
            raise ValueError("guidance scales must be >= 0 (text_cfg 1 = no text guidance, pose_cfg 0 = no pose "
                             "guidance)")
        if self.pose_cfg_start > self.pose_cfg_end:
            raise ValueError(f"pose_cfg_start ({self.pose_cfg_start:g}) must not be after pose_cfg_end "
                             f"({self.pose_cfg_end:g})")

    def window_active(self, idx: int, steps: int) -> bool:
        return pose_window_active(idx, steps, self.pose_cfg_start, self.pose_cfg_end)

    def passes(self, idx: int, steps: int) -> tuple[str, ...]:
        """The DiT passes needed at step ``idx`` (COND always first)."""
        out = [COND]
        if self.text_cfg != 1:
            out.append(UNCOND_TEXT)
        if self.pose_cfg != 0 and self.window_active(idx, steps):
            out.append(UNCOND_CONDITION)
        return tuple(out)


def pose_window_active(idx: int, steps: int, start: float, end: float) -> bool:
    """Official window test: ``start < idx/steps < end`` (both strict)."""
    frac = idx / steps
    return frac > start and frac < end


def combine(preds: dict[str, torch.Tensor], guidance: Guidance) -> torch.Tensor:
    """Guided prediction from the passes present in ``preds`` (same dtype as the predictions)."""
    c = preds[COND]
    if UNCOND_TEXT in preds:
        u = preds[UNCOND_TEXT]
        out = u + guidance.text_cfg * (c - u)
    else:
        out = c
    if UNCOND_CONDITION in preds:
        out = out + guidance.pose_cfg * (c - preds[UNCOND_CONDITION])
    return out


@dataclass(frozen=True)
class StepInfo:
    """What the loop reports after each step: index (0-based), count, the latent after the step."""

    step: int
    steps: int
    timestep: int
    latent: torch.Tensor


# predict(latent [16,F,h,w], timestep int, passes, step index) -> {pass: prediction [16,F,h,w]}; called once per
# step, in order (a step cache keys its decisions on the step index)
Predictor = Callable[[torch.Tensor, int, Sequence[str], int], dict]


def denoise(noise: torch.Tensor, schedule: Schedule, solver, predict: Predictor, guidance: Guidance,
            pin: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
            on_step: Optional[Callable[[StepInfo], None]] = None,
            should_cancel: Optional[Callable[[], bool]] = None) -> torch.Tensor:
    """Run the guided sampling loop from ``noise`` [16,F,h,w] (float32) and return the final latent.

    ``pin`` (optional) rewrites the latent before every model call and on the result (used to keep known latent
    frames clean). ``should_cancel`` is polled before every step; when it returns True, ``Cancelled`` is raised.
    """
    latent = noise
    steps = schedule.steps
    for idx in range(steps):
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"generation cancelled before step {idx + 1}/{steps}")
        if pin is not None:
            latent = pin(latent)
        t = int(schedule.timesteps[idx])
        preds = predict(latent, t, guidance.passes(idx, steps), idx)
        velocity = combine(preds, guidance)
        latent = solver.step(velocity[None], latent[None])[0]
        if pin is not None:
            latent = pin(latent)
        check_finite(latent, idx, steps)
        if on_step is not None:
            on_step(StepInfo(step=idx, steps=steps, timestep=t, latent=latent))
    return latent


def check_finite(latent: torch.Tensor, idx: int, steps: int) -> None:
    """Stop with ``NonFiniteLatentError`` when the latent holds NaN or Inf after step ``idx``."""
    if not bool(torch.isfinite(latent).all()):
        raise NonFiniteLatentError(
            f"the latent became NaN/Inf at sampling step {idx + 1}/{steps}, so the video would be garbage. Likely "
            "causes and fixes: fp16 overflow (use precision bf16), a LoRA made for another model or with too high "
            "a strength (remove it or lower its strength), guidance scales far outside the usual range (text_cfg "
            "1-7, pose_cfg 0-3), or damaged or mismatched DiT weights (download them again).")
