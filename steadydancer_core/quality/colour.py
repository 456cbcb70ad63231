"""Colour over time: how far the mean colour of the background and of the person has moved from frame 0's, as a
CIE L*a*b* (D65) shift (dL*, da*, db*) and its length, delta E (CIE76). Long videos drifting red or losing
contrast show as a rising curve; the drift's onset is the first frame from which it stays above a limit.

A region's mean colour is the colour of its average light: the sRGB pixels (read at 8 bits, as a video holds them)
are decoded to linear light, averaged, and the average converted to L*a*b*. The background is compared over the
pixels that are background in both frames (a person moving over a patterned wall is not a colour change); the
person over its own region in each frame.
"""
from __future__ import annotations

import cv2
import numpy as np

_CODES = np.arange(256, dtype=np.float64) / 255.0
SRGB_TO_LINEAR = np.where(_CODES <= 0.04045, _CODES / 12.92, ((_CODES + 0.055) / 1.055) ** 2.4).astype(np.float32)
RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                       [0.2126729, 0.7151522, 0.0721750],
                       [0.0193339, 0.1191920, 0.9503041]])
WHITE_D65 = RGB_TO_XYZ.sum(1)                 # the XYZ of linear (1, 1, 1)
EPSILON, KAPPA = 216 / 24389, 24389 / 27      # CIE's exact constants


def to_codes(frames: np.ndarray) -> np.ndarray:
    """float frames [..., H, W, 3] in [0, 1] -> their 8-bit codes round(255 x) (saturated), uint8 of the same
    shape."""
    frames = np.ascontiguousarray(frames, np.float32)
    flat = cv2.max(frames.reshape(-1, frames.shape[-1] * frames.shape[-2]), 0.0)   # negatives -> 0, then round
    return cv2.convertScaleAbs(flat, alpha=255.0).reshape(frames.shape)


def linear_from_codes(codes: np.ndarray) -> np.ndarray:
    """uint8 sRGB codes [H, W, 3] -> linear light float32 [H, W, 3]."""
    return cv2.LUT(codes, SRGB_TO_LINEAR)


def linear_rgb(frame: np.ndarray) -> np.ndarray:
    """float frame [H, W, 3] in [0, 1] (sRGB) -> linear light float32 [H, W, 3], through its 8-bit codes."""
    return linear_from_codes(to_codes(frame))


def region_mean(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-channel mean [3] float64 of ``image`` [H, W, 3] over ``mask`` (bool [H, W]); NaN when it is empty."""
    if not mask.any():
        return np.full(3, np.nan)
    return np.array(cv2.mean(image, mask=mask.view(np.uint8))[:3])


def lab_of_linear(rgb: np.ndarray) -> np.ndarray:
    """Linear-light RGB [3] -> CIE L*a*b* [3] (D65 white; L* in 0..100)."""
    xyz = RGB_TO_XYZ @ np.asarray(rgb, np.float64) / WHITE_D65
    f = np.where(xyz > EPSILON, np.cbrt(xyz), (KAPPA * xyz + 16) / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def region_shift(linear: np.ndarray, reference: np.ndarray, mask: np.ndarray, reference_mask: np.ndarray) -> np.ndarray:
    """L*a*b* of the mean light of ``linear[mask]`` minus that of ``reference[reference_mask]`` -> [3] float64
    (NaN when either region is empty)."""
    if not mask.any() or not reference_mask.any():
        return np.full(3, np.nan)
    return lab_of_linear(region_mean(linear, mask)) - lab_of_linear(region_mean(reference, reference_mask))


def delta_e(shift: np.ndarray) -> float:
    """CIE76 colour difference: the length of a L*a*b* shift (NaN when it is)."""
    return float(np.linalg.norm(np.asarray(shift, np.float64)))


def drift_onset(de, limit: float, min_frames: int):
    """The first frame from which ``de`` stays above ``limit`` for at least ``min_frames`` frames in a row; None when
    there is none."""
    run = 0
    for t, value in enumerate(de):
        run = run + 1 if value > limit else 0       # NaN compares False: ends a run
        if run >= min_frames:
            return t - run + 1
    return None
