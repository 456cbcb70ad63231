"""The frames a report reads, a few at a time: a video file, a tensor / array already in memory (ComfyUI's IMAGE),
or any iterable of frames or chunks. Every source yields float32 numpy chunks [t, H, W, 3] in [0, 1].
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np
import torch

from ..video_io import iter_video_frames, probe_video


def to_float_frames(frames) -> np.ndarray:
    """[t, H, W, 3] or [H, W, 3] (torch or numpy; float in [0, 1] or uint8) -> float32 numpy [t, H, W, 3]."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu()
        frames = frames.numpy() if frames.dtype in (torch.uint8, torch.float32) else frames.float().numpy()
    array = np.asarray(frames)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"frames must be RGB images [T, H, W, 3] (or [H, W, 3]), got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255.0)
    return np.asarray(array, np.float32)


def as_photo(photo) -> np.ndarray:
    """The photo (torch or numpy [H, W, 3] or [1, H, W, 3], float in [0, 1] or uint8) -> float32 [H, W, 3]."""
    array = to_float_frames(photo)
    if array.shape[0] != 1:
        raise ValueError(f"one photo expected, got a batch of {array.shape[0]} images")
    return array[0]


def count_frames(frames) -> Optional[int]:
    """How many frames the source holds, when known without reading it."""
    if isinstance(frames, (str, Path)):
        return probe_video(frames).frames
    if isinstance(frames, (torch.Tensor, np.ndarray)):
        return int(frames.shape[0]) if frames.ndim == 4 else 1
    try:
        return len(frames)
    except TypeError:
        return None


def iter_chunks(frames, chunk_frames: int) -> Iterator[np.ndarray]:
    """Chunks float32 [t <= chunk_frames, H, W, 3] of a video file, a tensor / array, or an iterable of frames
    ([H, W, 3]) or chunks ([t, H, W, 3]); only one chunk is converted at a time."""
    if isinstance(frames, (str, Path)):
        for chunk in iter_video_frames(frames, chunk_frames=chunk_frames):
            yield chunk.numpy()
        return
    if isinstance(frames, (torch.Tensor, np.ndarray)) and frames.ndim == 4:
        for start in range(0, int(frames.shape[0]), chunk_frames):
            yield to_float_frames(frames[start:start + chunk_frames])
        return
    yield from _regroup(frames, chunk_frames)


def _regroup(items: Iterable, chunk_frames: int) -> Iterator[np.ndarray]:
    """Frames and chunks of any lengths -> chunks of up to ``chunk_frames`` frames of one size each (a change of
    size starts a new chunk, for the caller to judge)."""
    pending: list = []
    for item in items:
        chunk = to_float_frames(item)
        if pending and chunk.shape[1:] != pending[0].shape:
            yield np.stack(pending)
            pending = []
        if chunk.shape[0] >= chunk_frames and not pending:
            yield chunk
            continue
        pending.extend(chunk)
        if len(pending) >= chunk_frames:
            yield np.stack(pending)
            pending = []
    if pending:
        yield np.stack(pending)
