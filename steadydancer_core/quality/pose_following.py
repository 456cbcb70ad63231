"""Pose following: does the generated body go where the driving pose says?

The keypoints of a generated frame (DWPose on the frame) are compared with the aligned driving pose the sampler
drew for that frame, both in pixels of the frame:

* PCK: the fraction of the driving pose's keypoints whose generated keypoint lies within alpha x the person's size
  (``Person.size``), for the body, the hands and the face separately; a keypoint the generated frame lacks counts
  as missed.
* OKS (COCO's object keypoint similarity on the 18 body points): mean of exp(-d^2 / (2 s^2 k^2)) over the driving
  pose's visible points, s^2 the area of its body box, k = 2 sigma with COCO's per-keypoint sigmas.
* lost: the driving pose has a person and the generated frame has none.
* jerk: the third difference of each body keypoint over four frames (its change of acceleration), averaged over
  the points visible in all four, in person sizes; of the generated keypoints and of the driving ones.
"""
from __future__ import annotations

from collections import deque
from typing import Optional

import numpy as np

from .keypoints import Person

# COCO keypoint sigmas in the OpenPose-18 order (the neck, absent from COCO, takes the shoulders')
BODY_SIGMAS = np.array([0.026, 0.079, 0.079, 0.072, 0.062, 0.079, 0.072, 0.062, 0.107, 0.087, 0.089, 0.107,
                        0.087, 0.089, 0.025, 0.025, 0.035, 0.035])
NAN = float("nan")


def pck(gen: np.ndarray, gen_ok: np.ndarray, ref: np.ndarray, ref_ok: np.ndarray, threshold: float) -> float:
    """Fraction of the ``ref_ok`` points [k, 2] matched by a ``gen_ok`` point within ``threshold`` pixels (NaN when
    the reference has none)."""
    if not ref_ok.any():
        return NAN
    dist = np.linalg.norm(gen - ref, axis=-1)
    hit = gen_ok & ref_ok & (dist <= threshold)
    return float(hit.sum() / ref_ok.sum())


def oks(gen: np.ndarray, gen_ok: np.ndarray, ref: np.ndarray, ref_ok: np.ndarray, area: float,
        sigmas: np.ndarray = BODY_SIGMAS) -> float:
    """COCO OKS of body points [18, 2]: mean over the reference's visible points of exp(-d^2 / (2 area k^2)),
    k = 2 sigma, a missing generated point scoring 0. NaN without reference points or area."""
    if not ref_ok.any() or area <= 0:
        return NAN
    d2 = ((gen - ref) ** 2).sum(-1)
    k2 = (2 * sigmas) ** 2
    score = np.where(gen_ok, np.exp(-d2 / (2 * area * k2)), 0.0)
    return float(score[ref_ok].mean())


def body_area(p: Person) -> float:
    """Area of the box of the visible body points, in pixels^2."""
    pts = p.body[p.body_ok]
    if len(pts) < 2:
        return 0.0
    w, h = pts.max(0) - pts.min(0)
    return float(w * h)


def frame_following(gen: Optional[Person], ref: Optional[Person], alpha_body: float, alpha_hands: float,
                    alpha_face: float) -> dict:
    """One frame: {pose_pck_body, pose_pck_hands, pose_pck_face, pose_oks, pose_lost}; all NaN when the driving
    pose has no person (nothing to follow)."""
    keys = ("pose_pck_body", "pose_pck_hands", "pose_pck_face", "pose_oks", "pose_lost")
    if ref is None:
        return dict.fromkeys(keys, NAN)
    size = ref.size()
    if gen is None:
        out = {"pose_pck_body": 0.0, "pose_pck_hands": 0.0 if ref.hands_ok.any() else NAN,
               "pose_pck_face": 0.0 if ref.face_ok.any() else NAN, "pose_oks": 0.0, "pose_lost": 1.0}
        return out
    return {
        "pose_pck_body": pck(gen.body, gen.body_ok, ref.body, ref.body_ok, alpha_body * size),
        "pose_pck_hands": pck(gen.hands, gen.hands_ok, ref.hands, ref.hands_ok, alpha_hands * size),
        "pose_pck_face": pck(gen.face, gen.face_ok, ref.face, ref.face_ok, alpha_face * size),
        "pose_oks": oks(gen.body, gen.body_ok, ref.body, ref.body_ok, body_area(ref)),
        "pose_lost": 0.0,
    }


def jerk(points: np.ndarray, ok: np.ndarray) -> float:
    """points [4, k, 2] of four consecutive frames, ok [4, k] -> mean norm of the third difference
    p3 - 3 p2 + 3 p1 - p0 over the points present in all four (NaN when none)."""
    both = ok.all(0)
    if not both.any():
        return NAN
    third = points[3] - 3 * points[2] + 3 * points[1] - points[0]
    return float(np.linalg.norm(third[both], axis=-1).mean())


class JerkTracker:
    """Streams the jerk of the generated and the driving body keypoints: ``update(gen, ref)`` once per frame ->
    (generated, driving) jerk in person sizes (NaN for the first three frames or without points)."""

    def __init__(self):
        self._gen: deque = deque(maxlen=4)
        self._ref: deque = deque(maxlen=4)

    @staticmethod
    def _entry(p: Optional[Person]):
        if p is None:
            return np.zeros((18, 2)), np.zeros(18, bool)
        return p.body, p.body_ok

    def update(self, gen: Optional[Person], ref: Optional[Person]) -> tuple[float, float]:
        self._gen.append(self._entry(gen))
        self._ref.append(self._entry(ref))
        size = (ref.size() if ref is not None else 0.0) or (gen.size() if gen is not None else 0.0)
        if len(self._gen) < 4 or size <= 0:
            return NAN, NAN
        out = []
        for window in (self._gen, self._ref):
            pts = np.stack([w[0] for w in window])
            ok = np.stack([w[1] for w in window])
            out.append(jerk(pts, ok) / size)
        return out[0], out[1]
