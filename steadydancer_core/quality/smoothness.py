"""Smoothness and flicker: how much the background (everything outside the person) changes from one frame to the
next, and which frames jump out of the video (a glitch: a large change both into and out of the frame).

The keypoint jerk (the other half of smoothness) lives with the keypoints in ``pose_following``.
"""
from __future__ import annotations

import cv2
import numpy as np

LEVELS = 255.0


def background_change(previous: np.ndarray, current: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute change, in levels of 255, over the ``mask`` pixels (bool [H, W]) of two frames [H, W, 3]
    (uint8 codes, or float in [0, 1]); NaN when the mask is empty."""
    if not mask.any():
        return float("nan")
    if previous.dtype == np.uint8 and current.dtype == np.uint8:
        diff, scale = cv2.absdiff(current, previous), 1.0
    else:
        diff, scale = np.abs(np.asarray(current, np.float32) - np.asarray(previous, np.float32)), LEVELS
    return float(np.mean(cv2.mean(diff, mask=mask.view(np.uint8))[:3]) * scale)


def glitch_frames(changes, factor: float, min_levels: float) -> list:
    """Frames whose change into them and out of them (the next frame's change) both exceed
    max(min_levels, factor x the median change); the last frame needs only its change in.

    changes: per frame, the change from the frame before (changes[0] is NaN).
    """
    values = np.asarray(changes, np.float64)
    valid = values[np.isfinite(values)]
    if not len(valid):
        return []
    limit = max(float(min_levels), float(factor) * float(np.median(valid)))
    high = np.nan_to_num(values, nan=-np.inf) > limit
    out = []
    for t in range(1, len(values)):
        if high[t] and (t == len(values) - 1 or high[t + 1]):
            out.append(t)
    return out
