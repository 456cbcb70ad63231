"""Pose frames rendered on demand: aligned keypoints (tiny) in memory, pixels only for the frames asked for.

``pose_sources(aligned, seed)`` gives the positive and the negative (augmented) frame sources of an
``AlignedPoses``; each has ``len()`` and ``frames(start, stop)`` -> uint8 [n, H, W, 3] RGB, pixel-identical to
rendering the whole sequence with ``render_frames`` / ``augment_frames`` up front. The augmentation draws one set of
random numbers per frame from a seeded generator, in order, so the augmented keypoints of every frame are computed
once, when the source is made (keypoints only), and a slice renders exactly what the full sequence would.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .align import AlignedPoses
from .augment import augment_frames
from .render import render
from .types import PoseFrame


class RenderedFrames:
    """Pose frames (coordinates normalised to ``canvas_hw``) rendered when read.

    ``output_hw``: resize each drawn canvas to (H, W) with area interpolation (``render``'s option).
    """

    def __init__(self, frames: Sequence[PoseFrame], canvas_hw: tuple[int, int],
                 output_hw: tuple[int, int] | None = None, draw_face: bool = False):
        self.pose_frames = list(frames)
        self.canvas_hw = (int(canvas_hw[0]), int(canvas_hw[1]))
        self.output_hw = None if output_hw is None else (int(output_hw[0]), int(output_hw[1]))
        self.draw_face = bool(draw_face)

    def __len__(self) -> int:
        return len(self.pose_frames)

    @property
    def frame_hw(self) -> tuple[int, int]:
        """(H, W) of the frames returned."""
        return self.output_hw or self.canvas_hw

    def frame(self, index: int) -> np.ndarray:
        return render(self.pose_frames[index], self.canvas_hw, draw_face=self.draw_face, output_hw=self.output_hw)

    def frames(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) (clipped to the length) as uint8 [n, H, W, 3]."""
        start, stop = max(0, int(start)), min(len(self), int(stop))
        out = np.empty((max(0, stop - start), *self.frame_hw, 3), np.uint8)
        for i in range(start, stop):
            out[i - start] = self.frame(i)
        return out


def pose_sources(aligned: AlignedPoses, augment_seed: int, output_hw: tuple[int, int] | None = None,
                 draw_face: bool = False) -> tuple[RenderedFrames, RenderedFrames]:
    """(positive, negative) lazily rendered frames of ``aligned``: the poses, and the poses augmented with
    ``augment_frames(aligned.frames, augment_seed)`` (augmented keypoints computed now, for every frame)."""
    positive = RenderedFrames(aligned.frames, aligned.canvas_hw, output_hw, draw_face)
    negative = RenderedFrames(augment_frames(aligned.frames, int(augment_seed)), aligned.canvas_hw, output_hw,
                              draw_face)
    return positive, negative
