"""One person's keypoints in pixels of a frame, from a pose frame (``pose.PoseFrame`` or anything with its fields).

A pose frame holds normalised coordinates (x / W, y / H) of the image it was measured on: the driving poses are
normalised to the official canvas, the generated frames' poses to the frames; both canvases have the photo's
aspect, so the same normalised point lands on the same place of a frame of any size. Missing hand / face points
are (-1, -1); body points carry ``body_visible``. Only person 0 (the best-scored one) is used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

NUM_BODY, NUM_HAND, NUM_FACE = 18, 21, 68
HEAD_POINTS = (0, 14, 15, 16, 17)            # nose, eyes, ears (OpenPose-18)


@dataclass(frozen=True)
class Person:
    """Person 0 of a pose frame in pixels (float64).

    body [18, 2], body_ok [18]; hands [42, 2] (left hand then right hand), hands_ok [42]; face [68, 2], face_ok [68]
    """

    body: np.ndarray
    body_ok: np.ndarray
    hands: np.ndarray
    hands_ok: np.ndarray
    face: np.ndarray
    face_ok: np.ndarray

    @property
    def all_points(self) -> np.ndarray:
        """Every present keypoint [k, 2]."""
        return np.concatenate([self.body[self.body_ok], self.hands[self.hands_ok], self.face[self.face_ok]])

    def size(self) -> float:
        """The larger side of the box of the visible body points (about the person's height standing); 0 when
        fewer than two body points are visible."""
        pts = self.body[self.body_ok]
        if len(pts) < 2:
            return 0.0
        return float((pts.max(0) - pts.min(0)).max())


def person(frame, hw: tuple[int, int]) -> Optional[Person]:
    """Person 0 of ``frame`` in pixels of an (H, W) frame; None when the frame has no person or no visible body
    point."""
    if frame is None or int(np.asarray(frame.bodies).shape[0]) == 0:
        return None
    scale = np.array([hw[1], hw[0]], np.float64)
    body = np.asarray(frame.bodies, np.float64)[0]
    body_ok = np.asarray(frame.body_visible, bool)[0] & np.isfinite(body).all(-1)
    if not body_ok.any():
        return None
    hands = np.asarray(frame.hands, np.float64)[0].reshape(2 * NUM_HAND, 2)
    face = np.asarray(frame.faces, np.float64)[0].reshape(NUM_FACE, 2)
    return Person(body * scale, body_ok, hands * scale, _present(hands), face * scale, _present(face))


def _present(points: np.ndarray) -> np.ndarray:
    """Hand / face points that exist: finite and not the (-1, -1) marker (any negative coordinate)."""
    return np.isfinite(points).all(-1) & (points >= 0).all(-1)
