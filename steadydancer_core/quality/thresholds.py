"""Every number the quality report judges by, stated once: how a frame is measured (``QualitySettings``) and when a
summary is good, worth a look, or bad (``VERDICT_LIMITS``).

The limits for PSNR, PCK / OKS, colour difference (CIE76 delta E, where about 2.3 is the smallest difference an eye
sees side by side) and keypoint jerk follow those measures' usual readings. The identity limits are for cosines of
the Wan CLIP ViT-H tower's class token (what the pack loads as clip_vision_h) and are provisional: read them against
other runs of the same photo (``compare_reports``) rather than as absolutes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

GOOD, CHECK, BAD, NOT_MEASURED = "good", "check", "bad", "n/a"


@dataclass(frozen=True)
class QualitySettings:
    """How each frame is measured.

    pck_alpha_*        PCK: a keypoint is followed when within alpha x the person's size (the larger side of the
                       driving pose's body box, in pixels of the frame) of its driving position
    followed_pck       a frame follows the pose when its body PCK is at least this
    person_margin      the person's region: the keypoints' box grown by this fraction of the person's size per side
    face_margin        the face crop: the face keypoints' box grown by this fraction per side, made square
    drift_de           colour drift: the background's mean colour more than this delta E (CIE76) from frame 0's ...
    drift_min_frames   ... for at least this many frames in a row (a lone odd frame is a glitch, not a drift)
    glitch_factor      a glitch frame: its background changes more than this x the video's median change ...
    glitch_min_levels  ... and more than this many levels of 255, both into and out of the frame
    identity_every     embed (CLIP) every this many frames, the others are not measured (1: every frame; the real
                       CLIP ViT-H costs seconds per image on a CPU, milliseconds on a GPU)
    thumbnails         worst frames kept (as small pictures for the plot) per measure
    thumb_height       their height in pixels
    chunk_frames       frames read, measured and embedded together (host memory holds about this many frames)
    """

    pck_alpha_body: float = 0.1
    pck_alpha_hands: float = 0.05
    pck_alpha_face: float = 0.05
    followed_pck: float = 0.8
    person_margin: float = 0.1
    face_margin: float = 0.25
    drift_de: float = 3.0
    drift_min_frames: int = 3
    glitch_factor: float = 4.0
    glitch_min_levels: float = 8.0
    identity_every: int = 1
    thumbnails: int = 3
    thumb_height: int = 128
    chunk_frames: int = 8

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"QualitySettings.{f.name} must be a finite number, got {value!r}")
        for name in ("pck_alpha_body", "pck_alpha_hands", "pck_alpha_face", "drift_de", "glitch_factor"):
            if getattr(self, name) <= 0:
                raise ValueError(f"QualitySettings.{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.followed_pck <= 1:
            raise ValueError(f"QualitySettings.followed_pck must be in (0, 1], got {self.followed_pck}")
        for name in ("person_margin", "face_margin", "glitch_min_levels", "thumbnails"):
            if getattr(self, name) < 0:
                raise ValueError(f"QualitySettings.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("drift_min_frames", "identity_every", "thumb_height", "chunk_frames"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 1:
                raise ValueError(f"QualitySettings.{name} must be an integer >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class Limit:
    """When the summary value ``key`` is good / worth a check / bad. ``higher_is_better``: good when value >= good,
    check when >= check, else bad (the reverse when False)."""

    key: str
    good: float
    check: float
    higher_is_better: bool
    what: str

    def __post_init__(self):
        if (self.good < self.check) if self.higher_is_better else (self.good > self.check):
            raise ValueError(f"Limit {self.key}: good ({self.good}) must be on the better side of check ({self.check})")

    def judge(self, value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return NOT_MEASURED
        sign = 1.0 if self.higher_is_better else -1.0
        if sign * value >= sign * self.good:
            return GOOD
        return CHECK if sign * value >= sign * self.check else BAD


VERDICT_LIMITS = {
    "first_frame": Limit("first_frame_psnr", 35.0, 28.0, True, "frame 0 is the photo (PSNR, dB)"),
    "pose": Limit("pose_followed_fraction", 0.9, 0.7, True, "frames whose body follows the driving pose"),
    "hands": Limit("pose_pck_hands_mean", 0.7, 0.5, True, "hand keypoints within reach of the driving hands"),
    "face": Limit("pose_pck_face_mean", 0.7, 0.5, True, "face keypoints within reach of the driving face"),
    "lost": Limit("pose_lost_count", 0, 2, False, "frames where the person was not found"),
    "identity": Limit("identity_photo_min", 0.85, 0.75, True, "least CLIP similarity of a frame to the photo"),
    "face_identity": Limit("face_identity_photo_min", 0.8, 0.7, True, "least CLIP similarity of the face to the photo's"),
    "jerk": Limit("jerk_ratio", 1.5, 3.0, False, "keypoint jerk of the result / of the driving poses"),
    "glitches": Limit("glitch_count", 0, 1, False, "frames that jump out of the video (noise, flashes)"),
    "colour": Limit("colour_bg_de_max", 3.0, 6.0, False, "largest background colour shift from frame 0 (delta E)"),
    "person_colour": Limit("colour_person_de_max", 6.0, 10.0, False,
                           "largest shift of the person's mean colour from frame 0 (delta E; moving limbs move it)"),
    "start_gap": Limit("start_gap", 0.05, 0.15, False, "photo pose vs first driving pose (person heights)"),
}


def verdicts(summary: dict) -> dict:
    """{measure: good | check | bad | n/a} for a report's summary values."""
    return {name: limit.judge(summary.get(limit.key)) for name, limit in VERDICT_LIMITS.items()}
