"""Pose rendering identical to the official SteadyDancer ``draw_pose`` (then BGR->RGB).

Order: body limbs (filled ellipses, half-width 4 px), whole canvas x0.6 (truncated), body joints
(radius 4), hands (edges thickness 2 with HSV colours, then radius-4 joints), optionally the face.
Output is RGB uint8 [H, W, 3] with the official displayed colours (red/blue swapped relative to the
usual OpenPose palette). Coordinates are truncated to int exactly as the official code does, with
float32 arithmetic for the pixel positions.
"""
from __future__ import annotations

import math
from typing import Iterable, Iterator

import cv2
import numpy as np

from . import skeleton as sk
from .types import PoseFrame

_DIM_LUT = (np.arange(256, dtype=np.float64) * sk.LIMB_DIM).astype(np.uint8)
_BODY_RGB = tuple(sk.rgb(c) for c in sk.BODY_COLOURS)
_HAND_EDGE_RGB = tuple(sk.rgb(c) for c in sk.HAND_EDGE_COLOURS)
_HAND_JOINT_RGB = sk.rgb(sk.HAND_JOINT_COLOUR)
_FACE_RGB = sk.rgb(sk.FACE_COLOUR)


def _pixel_ints(points: np.ndarray, h: int, w: int) -> np.ndarray:
    """int(x * W), int(y * H) for float32 points [..., 2] (float32 products, truncation toward 0)."""
    xy = points * np.array([w, h], dtype=np.float32)
    return np.trunc(xy).astype(np.int64)


def draw_bodies(canvas: np.ndarray, frame: PoseFrame) -> None:
    """Limbs, dimming and joints of every person in ``frame`` (in place on an RGB canvas)."""
    h, w = canvas.shape[:2]
    bodies, visible = frame.bodies, frame.body_visible
    fh, fw = np.float32(h), np.float32(w)
    for i in range(sk.NUM_DRAWN_LIMBS):
        a, b = sk.BODY_LIMBS[i]
        for n in range(frame.num_persons):
            if not (visible[n, a] and visible[n, b]):
                continue
            ys = bodies[n, [a, b], 1] * fh
            xs = bodies[n, [a, b], 0] * fw
            my = (ys[0] + ys[1]) / np.float32(2)
            mx = (xs[0] + xs[1]) / np.float32(2)
            dy, dx = ys[0] - ys[1], xs[0] - xs[1]
            length = (dy * dy + dx * dx) ** np.float32(0.5)
            angle = math.degrees(math.atan2(float(dy), float(dx)))
            poly = cv2.ellipse2Poly((int(mx), int(my)), (int(length / np.float32(2)), sk.LIMB_HALF_WIDTH),
                                    int(angle), 0, 360, 1)
            cv2.fillConvexPoly(canvas, poly, _BODY_RGB[i])
    cv2.LUT(canvas, _DIM_LUT, dst=canvas)
    joints = _pixel_ints(bodies, h, w)
    for j in range(sk.NUM_BODY_JOINTS):
        for n in range(frame.num_persons):
            if visible[n, j]:
                cv2.circle(canvas, (int(joints[n, j, 0]), int(joints[n, j, 1])), sk.JOINT_RADIUS,
                           _BODY_RGB[j], thickness=-1)


def draw_hands(canvas: np.ndarray, frame: PoseFrame) -> None:
    """Hands in the official list order: all persons' left hands, then all right hands."""
    h, w = canvas.shape[:2]
    hands = np.concatenate([frame.hands[:, 0], frame.hands[:, 1]], axis=0)
    pix = _pixel_ints(hands, h, w)
    ok = (pix > sk.HAND_EPS).all(axis=-1)  # [hands, 21]
    for k in range(pix.shape[0]):
        p, good = pix[k], ok[k]
        for e, (a, b) in enumerate(sk.HAND_EDGES):
            if good[a] and good[b]:
                cv2.line(canvas, (int(p[a, 0]), int(p[a, 1])), (int(p[b, 0]), int(p[b, 1])),
                         _HAND_EDGE_RGB[e], thickness=sk.HAND_LINE_THICKNESS)
        for j in np.flatnonzero(good):
            cv2.circle(canvas, (int(p[j, 0]), int(p[j, 1])), sk.HAND_JOINT_RADIUS, _HAND_JOINT_RGB, thickness=-1)


def draw_faces(canvas: np.ndarray, frame: PoseFrame) -> None:
    h, w = canvas.shape[:2]
    pix = _pixel_ints(frame.faces, h, w)
    for face in pix:
        for x, y in face:
            if x > sk.HAND_EPS and y > sk.HAND_EPS:
                cv2.circle(canvas, (int(x), int(y)), sk.FACE_RADIUS, _FACE_RGB, thickness=-1)


def render(frame: PoseFrame, canvas_hw: tuple[int, int], draw_face: bool = False) -> np.ndarray:
    """Draw ``frame`` (coordinates normalised to the canvas) -> RGB uint8 [H, W, 3]."""
    h, w = (int(v) for v in canvas_hw)
    canvas = np.zeros((h, w, 3), dtype=np.uint8)
    draw_bodies(canvas, frame)
    draw_hands(canvas, frame)
    if draw_face:
        draw_faces(canvas, frame)
    return canvas


def render_frames(frames: Iterable[PoseFrame], canvas_hw: tuple[int, int], output_hw: tuple[int, int] | None = None,
                  draw_face: bool = False) -> Iterator[np.ndarray]:
    """Lazily render each frame at ``canvas_hw`` (official: 2x the resized photo).

    ``output_hw``: optionally resize each rendered frame to (H, W) with area interpolation (the
    official code later resizes the frames with PIL bicubic to the generation size).
    """
    for frame in frames:
        img = render(frame, canvas_hw, draw_face=draw_face)
        if output_hw is not None and tuple(output_hw) != img.shape[:2]:
            img = cv2.resize(img, (int(output_hw[1]), int(output_hw[0])), interpolation=cv2.INTER_AREA)
        yield img
