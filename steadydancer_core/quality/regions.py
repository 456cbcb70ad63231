"""Where the person is in a frame: a box (everything outside it is background), a body-shaped mask (the person's
own colours), and the face's square box (the face crop CLIP compares).

Boxes are (y0, y1, x0, x1) in pixels, end-exclusive, clipped to the frame; masks are bool [H, W].
"""
from __future__ import annotations

from typing import Iterable, Optional

import cv2
import numpy as np

from .keypoints import HEAD_POINTS, Person

# OpenPose-18 body connectivity: the limbs the body-shaped mask draws as capsules, and the torso polygon
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
TORSO = (2, 5, 11, 8)
LIMB_RADIUS = 0.06         # capsule radius, fraction of the person's size
HEAD_RADIUS = 0.08         # disc around the nose
MIN_FACE_POINTS = 5
MIN_FACE_PIXELS = 8


def _clip_box(y0, y1, x0, x1, hw) -> Optional[tuple[int, int, int, int]]:
    y0, x0 = max(int(np.floor(y0)), 0), max(int(np.floor(x0)), 0)
    y1, x1 = min(int(np.ceil(y1)), hw[0]), min(int(np.ceil(x1)), hw[1])
    return (y0, y1, x0, x1) if y1 > y0 and x1 > x0 else None


def person_box(p: Person, hw: tuple[int, int], margin: float) -> Optional[tuple[int, int, int, int]]:
    """The box of every keypoint of ``p`` grown by ``margin`` x its size per side (None: outside the frame)."""
    pts = p.all_points
    grow = margin * max(p.size(), 1.0)
    (x0, y0), (x1, y1) = pts.min(0) - grow, pts.max(0) + grow
    return _clip_box(y0, y1 + 1, x0, x1 + 1, hw)


def background_mask(people: Iterable[Optional[Person]], hw: tuple[int, int], margin: float) -> np.ndarray:
    """True outside the boxes of every given person (all True when there is none)."""
    mask = np.ones(hw, bool)
    for p in people:
        box = person_box(p, hw, margin) if p is not None else None
        if box is not None:
            y0, y1, x0, x1 = box
            mask[y0:y1, x0:x1] = False
    return mask


def person_mask(p: Optional[Person], hw: tuple[int, int]) -> np.ndarray:
    """The body's shape: capsules along the visible limbs, the torso polygon and a disc at the head (bool [H, W];
    all False when there is no person)."""
    canvas = np.zeros(hw, np.uint8)
    if p is None:
        return canvas.astype(bool)
    size = max(p.size(), 1.0)
    radius = max(int(round(LIMB_RADIUS * size)), 1)
    pts = np.round(p.body).astype(np.int64)
    ok = p.body_ok
    for a, b in LIMBS:
        if ok[a] and ok[b]:
            cv2.line(canvas, (int(pts[a, 0]), int(pts[a, 1])), (int(pts[b, 0]), int(pts[b, 1])), 1, 2 * radius + 1)
    for j in np.flatnonzero(ok):
        cv2.circle(canvas, (int(pts[j, 0]), int(pts[j, 1])), radius, 1, -1)
    if all(ok[j] for j in TORSO):
        cv2.fillConvexPoly(canvas, pts[list(TORSO)].astype(np.int32), 1)
    if ok[0]:
        cv2.circle(canvas, (int(pts[0, 0]), int(pts[0, 1])), max(int(round(HEAD_RADIUS * size)), 1), 1, -1)
    return canvas.astype(bool)


def face_box(p: Optional[Person], hw: tuple[int, int], margin: float) -> Optional[tuple[int, int, int, int]]:
    """A square around the face: the face keypoints' box (or, without them, the head points': nose, eyes, ears)
    grown by ``margin`` per side. None when there is no face or it is under ``MIN_FACE_PIXELS`` pixels."""
    if p is None:
        return None
    if p.face_ok.sum() >= MIN_FACE_POINTS:
        pts = p.face[p.face_ok]
    else:
        head = [j for j in HEAD_POINTS if p.body_ok[j]]
        if len(head) < 2:
            return None
        pts = p.body[head]
    centre = (pts.min(0) + pts.max(0)) / 2
    side = float((pts.max(0) - pts.min(0)).max()) * (1 + 2 * margin)
    if side < MIN_FACE_PIXELS:
        return None
    half = side / 2
    return _clip_box(centre[1] - half, centre[1] + half, centre[0] - half, centre[0] + half, hw)


def crop(image: np.ndarray, box: Optional[tuple[int, int, int, int]]) -> Optional[np.ndarray]:
    """image[y0:y1, x0:x1] (a view), or None without a box."""
    if box is None:
        return None
    y0, y1, x0, x1 = box
    return image[y0:y1, x0:x1]
