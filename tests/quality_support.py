"""Known-answer inputs for the quality report tests: a dancing pose sequence, a keypoint reader for rendered
skeletons (every body joint is drawn in its own colour), a photo, and a small embedding function."""
from __future__ import annotations

import math

import numpy as np

import pose
from pose import skeleton as sk

TEMPLATE = np.array([[0.5, 0.2], [0.5, 0.29], [0.4, 0.29], [0.35, 0.4], [0.3, 0.5], [0.6, 0.29], [0.65, 0.4],
                     [0.7, 0.5], [0.45, 0.56], [0.44, 0.75], [0.43, 0.93], [0.55, 0.56], [0.56, 0.75],
                     [0.57, 0.93], [0.47, 0.17], [0.53, 0.17], [0.44, 0.19], [0.56, 0.19]], np.float32)
JOINT_RGB = [sk.rgb(c) for c in sk.BODY_COLOURS]
HW = (160, 96)


def dancer(t: int, image_hw=HW, hands: bool = False, face: bool = False) -> pose.PoseFrame:
    """A person at frame t: swaying fast from side to side, arms waving (asymmetric, so a mirror image is a
    different pose); hands / faces (-1) unless asked."""
    body = TEMPLATE.copy() + np.float32(0.15 * math.sin(1.3 * t)) * np.array([1, 0], np.float32)
    for wrist, elbow, phase in ((4, 3, 0.0), (7, 6, 2.0)):
        a = math.sin(1.1 * t + phase)
        body[wrist] = body[elbow] + np.array([0.1 * math.cos(a) * (-1 if wrist == 4 else 1), -0.12 * a], np.float32)
    hand = np.full((2, 21, 2), -1, np.float32)
    if hands:
        fan = np.linspace(0, 0.04, 42, dtype=np.float32).reshape(21, 2)
        hand = np.stack([body[7] + fan, body[4] - fan])
    faces = np.full((68, 2), -1, np.float32)
    if face:
        ang = np.linspace(0, 2 * math.pi, 68, endpoint=False)
        faces = (body[0] + np.stack([0.04 * np.cos(ang), 0.03 * np.sin(ang)], 1)).astype(np.float32)
    return pose.PoseFrame(body[None], np.ones((1, 18), bool), hand[None], faces[None], image_hw)


def read_skeleton(images) -> list:
    """Pose frames read off rendered skeletons: joint j = the centroid of the pixels in joint j's exact colour."""
    out = []
    for image in images:
        h, w = image.shape[:2]
        body = np.zeros((18, 2), np.float32)
        ok = np.zeros(18, bool)
        for j, colour in enumerate(JOINT_RGB):
            ys, xs = np.nonzero((image == np.array(colour, np.uint8)).all(-1))
            if len(xs) >= 3:
                body[j] = ((xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h)
                ok[j] = True
        if not ok.any():
            out.append(pose.PoseFrame.empty((h, w)))
            continue
        out.append(pose.PoseFrame(body[None], ok[None], np.full((1, 2, 21, 2), -1, np.float32),
                                  np.full((1, 68, 2), -1, np.float32), (h, w)))
    return out


def skeleton_video(poses, hw=HW, background=None) -> np.ndarray:
    """uint8 [T, H, W, 3]: each pose drawn (the pack's renderer) over ``background`` (black by default)."""
    frames = []
    for p in poses:
        drawn = pose.render(p, hw)
        if background is not None:
            drawn = np.where(drawn.any(-1, keepdims=True), drawn, background)
        frames.append(drawn)
    return np.stack(frames)


def textured_background(hw=HW, seed: int = 0) -> np.ndarray:
    """A smooth, non-black uint8 background with no pure joint colours."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:hw[0], 0:hw[1]].astype(np.float32)
    base = np.stack([90 + 40 * np.sin(x / 9.0), 110 + 30 * np.cos(y / 13.0), 100 + 20 * np.sin((x + y) / 7.0)], -1)
    return np.clip(base + rng.normal(0, 2, base.shape), 20, 200).astype(np.uint8)


def small_embed(images) -> np.ndarray:
    """A stand-in for CLIP: the square root of each image's 4x4x4 colour histogram -> [N, 64] (like CLIP's, it
    hardly moves when the picture shifts or is mirrored, and moves a lot for another picture or noise)."""
    out = []
    for im in images:
        codes = np.minimum((np.asarray(im, np.float32) * 4).astype(np.int64), 3).reshape(-1, 3)
        hist = np.bincount(codes[:, 0] * 16 + codes[:, 1] * 4 + codes[:, 2], minlength=64).astype(np.float64)
        out.append(np.sqrt(hist / max(len(codes), 1)))
    return np.stack(out)
