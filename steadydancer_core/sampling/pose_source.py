"""Pose frame sources: what ``generate`` reads the positive / negative pose frames from, one segment at a time.

A source has a length (its frame count) and ``frames(start, stop)``, the frames [start, stop) as float32
[n, H, W, 3] in [0, 1] (a torch tensor) or uint8 [n, H, W, 3] (a numpy array, read as value / 255). A tensor
[T, H, W, 3] is a source too (``TensorPoseFrames``). A lazy source (e.g. one that renders aligned keypoints on
demand) keeps only one segment of pose frames in memory while generating.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .conditioning import as_frames, pose_video

__all__ = ["PoseFrames", "TensorPoseFrames", "as_pose_frames", "read_pose_video"]


@runtime_checkable
class PoseFrames(Protocol):
    """Pose frames read by range: ``len(source)`` frames; ``frames(start, stop)`` -> [stop - start, H, W, 3]."""

    def __len__(self) -> int: ...

    def frames(self, start: int, stop: int): ...


class TensorPoseFrames:
    """A tensor [T, H, W, 3] float in [0, 1] as a pose frame source (slices share its memory)."""

    def __init__(self, images: torch.Tensor, name: str = "pose"):
        self.images = as_frames(images, name)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def frames(self, start: int, stop: int) -> torch.Tensor:
        return self.images[start:stop]


class _CheckedFrames:
    """A lazy source whose chunks are checked (and uint8 arrays converted) as they are read."""

    def __init__(self, source, name: str):
        self.source, self.name = source, name

    def __len__(self) -> int:
        return len(self.source)

    def frames(self, start: int, stop: int) -> torch.Tensor:
        stop = min(int(stop), len(self))
        if not 0 <= start < stop:
            raise IndexError(f"{self.name}: frames [{start}, {stop}) outside 0..{len(self)}")
        chunk = self.source.frames(int(start), stop)
        if isinstance(chunk, np.ndarray):
            if chunk.dtype != np.uint8:
                raise ValueError(f"{self.name}: a pose source's numpy frames must be uint8, got {chunk.dtype}")
            chunk = torch.from_numpy(np.ascontiguousarray(chunk)).float().div_(255.0)
        chunk = as_frames(chunk, self.name)
        if chunk.shape[0] != stop - start:
            raise ValueError(f"{self.name}: frames({start}, {stop}) returned {chunk.shape[0]} frames")
        return chunk


def as_pose_frames(value, name: str = "pose"):
    """A tensor [T, H, W, 3] or a source (``__len__`` + ``frames(start, stop)``) -> a checked pose frame source."""
    if isinstance(value, (TensorPoseFrames, _CheckedFrames)):
        return value
    if isinstance(value, torch.Tensor):
        return TensorPoseFrames(value, name)
    if hasattr(value, "frames") and hasattr(value, "__len__"):
        if len(value) == 0:
            raise ValueError(f"{name} has no frames")
        return _CheckedFrames(value, name)
    raise TypeError(f"{name} must be a torch tensor [T, H, W, 3] in [0, 1] or a pose frame source "
                    f"(len() and frames(start, stop)), got {type(value).__name__}")


def read_pose_video(source, start: int, stop: int, pil_hw: tuple, size: tuple) -> torch.Tensor:
    """Frames [start, stop) of a checked source as a model video [3, n, *size] in [-1, 1] (``pose_video``: PIL
    bicubic to ``pil_hw``, then torch bicubic to ``size``), read and resized one frame at a time: only the output
    and one frame at its source size and at ``pil_hw`` are held (both resizes work on each frame on its own, so the
    numbers are those of resizing the whole range at once)."""
    pil_hw, size = (int(pil_hw[0]), int(pil_hw[1])), (int(size[0]), int(size[1]))
    start, stop = int(start), min(int(stop), len(source))
    if not 0 <= start < stop:
        raise IndexError(f"no frames in [{start}, {stop})")
    out = torch.empty((3, stop - start, *size), dtype=torch.float32)
    for i in range(start, stop):
        out[:, i - start:i - start + 1] = pose_video(source.frames(i, i + 1), pil_hw, size)
    return out
