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
# Drawn primitives reach at most this far beyond their keypoints (radius 4, half-width 4, rounding).
_MARGIN = max(sk.JOINT_RADIUS, sk.LIMB_HALF_WIDTH, sk.HAND_JOINT_RADIUS) + 3


def _pixel_ints(points: np.ndarray, h: int, w: int) -> np.ndarray:
    """int(x * W), int(y * H) for float32 points [..., 2] (float32 products, truncation toward 0)."""
    xy = points * np.array([w, h], dtype=np.float32)
    return np.trunc(xy).astype(np.int64)


def content_box(frame: PoseFrame, canvas_hw: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) enclosing everything ``render`` can draw for ``frame`` (None: nothing drawn)."""
    h, w = canvas_hw
    pts = [_pixel_ints(frame.bodies, h, w)[frame.body_visible]]
    if frame.num_persons:
        hp = _pixel_ints(frame.hands, h, w).reshape(-1, 2)
        pts.append(hp[(hp > sk.HAND_EPS).all(-1)])
    pts = np.concatenate(pts)
    if not len(pts):
        return None
    m = _MARGIN
    x0, y0 = np.maximum(pts.min(0) - m, 0)
    x1, y1 = np.minimum(pts.max(0) + m + 1, [w, h])
    if x0 >= x1 or y0 >= y1:
        return None
    return int(y0), int(y1), int(x0), int(x1)


def draw_bodies(canvas: np.ndarray, frame: PoseFrame, box: tuple[int, int, int, int] | None = None) -> None:
    """Limbs, dimming and joints of every person in ``frame`` (in place on an RGB canvas).

    ``box`` (from ``content_box``) limits the dimming pass to where limbs can be (same result, faster).
    """
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
    if box is None:
        cv2.LUT(canvas, _DIM_LUT, dst=canvas)
    else:
        y0, y1, x0, x1 = box
        roi = canvas[y0:y1, x0:x1]
        roi[...] = cv2.LUT(roi, _DIM_LUT)
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


def render(frame: PoseFrame, canvas_hw: tuple[int, int], draw_face: bool = False,
           output_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Draw ``frame`` (coordinates normalised to the canvas) -> RGB uint8 [H, W, 3].

    ``output_hw``: resize the drawn canvas to (H, W) with area interpolation; only the part of the
    canvas that holds drawing is resampled (aligned to the resampling period, so the result is that
    of resizing the whole canvas).
    """
    h, w = (int(v) for v in canvas_hw)
    canvas = np.zeros((h, w, 3), dtype=np.uint8)
    box = content_box(frame, (h, w)) if not draw_face else None
    draw_bodies(canvas, frame, box)
    draw_hands(canvas, frame)
    if draw_face:
        draw_faces(canvas, frame)
    if output_hw is None or tuple(output_hw) == (h, w):
        return canvas
    return _area_resize(canvas, (int(output_hw[0]), int(output_hw[1])), box if not draw_face else (0, h, 0, w))


def _period(n_in: int, n_out: int) -> tuple[int, int]:
    g = math.gcd(n_in, n_out)
    return n_in // g, n_out // g


def _area_resize(canvas: np.ndarray, out_hw: tuple[int, int], box: tuple[int, int, int, int] | None) -> np.ndarray:
    h, w = canvas.shape[:2]
    out = np.zeros((out_hw[0], out_hw[1], 3), np.uint8)
    if box is None:
        return out
    (py, qy), (px, qx) = _period(h, out_hw[0]), _period(w, out_hw[1])
    y0, y1, x0, x1 = box
    by0, by1 = y0 // py, -(-y1 // py)  # whole periods covering the box
    bx0, bx1 = x0 // px, -(-x1 // px)
    src = canvas[by0 * py:by1 * py, bx0 * px:bx1 * px]
    out[by0 * qy:by1 * qy, bx0 * qx:bx1 * qx] = cv2.resize(src, ((bx1 - bx0) * qx, (by1 - by0) * qy),
                                                           interpolation=cv2.INTER_AREA)
    return out


def render_frames(frames: Iterable[PoseFrame], canvas_hw: tuple[int, int], output_hw: tuple[int, int] | None = None,
                  draw_face: bool = False) -> Iterator[np.ndarray]:
    """Lazily render each frame at ``canvas_hw`` (official: 2x the resized photo).

    ``output_hw``: optionally resize each rendered frame to (H, W) with area interpolation (the
    official code later resizes the frames with PIL bicubic to the generation size).
    """
    for frame in frames:
        yield render(frame, canvas_hw, draw_face=draw_face, output_hw=output_hw)
