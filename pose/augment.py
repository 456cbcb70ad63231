"""Negative-condition augmentation (official ``utils_aug.pose_aug_diff``), made reproducible by a seed.

Per frame, four uniform draws in the official order: offset_x U(-0.2, 0.2) and offset_y U(-0.2, 0.2)
(drawn but unused, as in the official code), scale s U(0.7, 1.3), aspect a U(0.6, 1.4). Bodies and
hands are scaled about the neck of person 0 (x by s*a, y by s); faces are only translated. The
official code draws from Python's global ``random`` unseeded; here the draws come from
``random.Random(seed)``, so with the seed the official run was seeded with, the draws (and frames)
are identical.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from .types import PoseFrame

OFFSET_RANGE = (-0.2, 0.2)
SCALE_RANGE = (0.7, 1.3)
ASPECT_RANGE = (0.6, 1.4)


@dataclass(frozen=True)
class AugmentDraw:
    offset_x: float
    offset_y: float
    scale: float
    aspect: float


def draw_params(rng: random.Random, scale_range=SCALE_RANGE, aspect_range=ASPECT_RANGE) -> AugmentDraw:
    """The four official draws, in order."""
    ox = rng.uniform(*OFFSET_RANGE)
    oy = rng.uniform(*OFFSET_RANGE)
    return AugmentDraw(ox, oy, rng.uniform(*scale_range), rng.uniform(*aspect_range))


def augment_frame(frame: PoseFrame, scale: float, aspect: float) -> PoseFrame:
    """Scale bodies and hands about person 0's neck: x' = n + s*a*(x - n), y' = n + s*(y - n) (float32)."""
    if frame.num_persons == 0:
        return frame
    a32, s32 = np.float32(aspect), np.float32(scale)
    bodies = frame.bodies.copy()
    hands = frame.hands.copy()
    neck = bodies[0, 1].copy()
    bodies[..., 0] = bodies[..., 0] * a32
    hands[..., 0] = hands[..., 0] * a32
    bodies *= s32
    hands *= s32
    shift = neck - bodies[0, 1]
    return frame.replace(bodies=bodies + shift, hands=hands + shift, faces=frame.faces + shift)


def augment(frames: Iterable[PoseFrame], seed: int, scale_range=SCALE_RANGE,
            aspect_range=ASPECT_RANGE) -> Iterator[tuple[PoseFrame, AugmentDraw]]:
    """Lazily yield (augmented frame, draws) for each aligned frame; one independent draw per frame."""
    rng = random.Random(seed)
    for frame in frames:
        d = draw_params(rng, scale_range, aspect_range)
        yield augment_frame(frame, d.scale, d.aspect), d


def augment_frames(frames: Iterable[PoseFrame], seed: int, scale_range=SCALE_RANGE,
                   aspect_range=ASPECT_RANGE) -> Iterator[PoseFrame]:
    """``augment`` without the draws: the negative-condition poses, lazily."""
    for frame, _ in augment(frames, seed, scale_range, aspect_range):
        yield frame
