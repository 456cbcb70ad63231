"""Start gap: how far the photo's pose is from the first driving pose after alignment. The video starts on the
photo and must reach the driving pose, so a large gap shows as a jump or a morph over the first frames (the
SteadyDancer paper's "start gap"). Known before generating: it needs only the two poses.

Both poses are taken in pixels of the photo (the aligned poses are normalised to a canvas with the photo's aspect);
the gap is the mean distance of the body points visible in both, in units of the photo person's size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .keypoints import person
from .thresholds import BAD, GOOD, NOT_MEASURED, VERDICT_LIMITS

BODY_NAMES = ("nose", "neck", "right shoulder", "right elbow", "right wrist", "left shoulder", "left elbow",
              "left wrist", "right hip", "right knee", "right ankle", "left hip", "left knee", "left ankle",
              "right eye", "left eye", "right ear", "left ear")
ADVICE = ("to avoid it, use a photo in the pose of the driving video's first frame, or cut the driving video to start "
          "where the dancer stands as in the photo")


@dataclass(frozen=True)
class StartGap:
    """gap: mean body-point distance in person sizes (NaN when not measurable); farthest: the joints that move most
    (name, distance), farthest first; verdict: good | check | bad | n/a; message: one line saying what it means."""

    gap: float
    farthest: tuple
    verdict: str
    message: str

    def to_dict(self) -> dict:
        return {"start_gap": None if np.isnan(self.gap) else self.gap,
                "farthest": [list(f) for f in self.farthest], "verdict": self.verdict, "message": self.message}


def start_gap(photo_pose, first_pose, joints: int = 3) -> StartGap:
    """Photo pose (normalised to the photo) vs the first aligned driving pose (normalised to its canvas)."""
    hw = tuple(photo_pose.image_hw)
    ref, drv = person(photo_pose, hw), person(first_pose, hw)
    limit = VERDICT_LIMITS["start_gap"]
    if ref is None or drv is None or ref.size() <= 0:
        return StartGap(float("nan"), (), NOT_MEASURED,
                        "start gap not measured: no person in the photo's pose or in the first driving pose")
    both = ref.body_ok & drv.body_ok
    if not both.any():
        return StartGap(float("nan"), (), NOT_MEASURED, "start gap not measured: no body point visible in both poses")
    dist = np.linalg.norm(ref.body - drv.body, axis=-1) / ref.size()
    gap = float(dist[both].mean())
    order = [j for j in np.argsort(-np.where(both, dist, -1.0)) if both[j]][:joints]
    farthest = tuple((BODY_NAMES[j], round(float(dist[j]), 3)) for j in order)
    verdict = limit.judge(gap)
    if verdict == GOOD:
        message = f"start gap {gap:.2f} person heights: the photo's pose matches the first driving pose"
    else:
        moved = ", ".join(name for name, _ in farthest)
        size = "large" if verdict == BAD else "noticeable"
        message = (f"start gap {gap:.2f} person heights ({size}; most: {moved}): the first frames will move from the "
                   f"photo's pose to the driving pose; {ADVICE}")
    return StartGap(gap, farthest, verdict, message)
