"""First frame: is frame 0 the photo? PSNR and the largest difference of frame 0 against the photo at the working
size (the photo resized as the sampler resizes it: bicubic, no antialias, clamped to [0, 1])."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..sampling import conditioning

LEVELS = 255.0


def photo_at(photo: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """photo float32 [H, W, 3] in [0, 1] -> float32 [h, w, 3] at ``hw``, as the sampler resizes it
    (``conditioning.photo_at``; the same array when already that size)."""
    if tuple(photo.shape[:2]) == tuple(hw):
        return photo
    return conditioning.photo_at(torch.from_numpy(np.ascontiguousarray(photo)), hw).numpy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two float images in [0, 1] (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    """The largest per-channel difference, in levels of 255."""
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max() * LEVELS)


def first_frame_check(frame0: np.ndarray, photo: np.ndarray) -> dict:
    """frame0 float [H, W, 3], photo float [H', W', 3] in [0, 1] -> {first_frame_psnr, first_frame_max_abs}."""
    ref = photo_at(photo, frame0.shape[:2])
    return {"first_frame_psnr": psnr(frame0, ref), "first_frame_max_abs": max_abs(frame0, ref)}
