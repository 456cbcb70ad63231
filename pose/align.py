"""Official SteadyDancer pose retargeting (``pose_align.py``: scales + ``align_img`` + centre offset).

Scales are computed once, from the photo's pose and the first driving frame (person 0 of each);
every frame is then re-proportioned about its own neck with those scales and translated by the
fixed offset ``neck_ref - neck_first``, all in "height units" (x multiplied by W/H), and finally
normalised to the photo's canvas (x divided by the photo's W/H). Arithmetic follows the official
code: float32 arrays, each scaling step computed in float64 (``cv2.getRotationMatrix2D``
semantics) and stored back to float32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np

from .types import PoseFrame, PoseSequence

REFERENCE_MAX_AREA = 1024 * 576   # the official pixel budget of the resized photo
REFERENCE_MULTIPLE = 16           # resized photo sides are multiples of this
CANVAS_FACTOR = 2                 # pose frames are drawn at 2x the resized photo


class NoPersonError(ValueError):
    """No person was found where one is required (the reference photo, or every driving frame)."""

    @classmethod
    def in_reference(cls) -> "NoPersonError":
        return cls("No person was found in the reference photo. Use a photo in which one person is clearly visible "
                   "(at least head and shoulders, not too small in the frame), or check that the detector/estimator "
                   "model files are the DWPose ones (yolox_l.onnx, dw-ll_ucoco_384.onnx).")

    @classmethod
    def in_driving(cls) -> "NoPersonError":
        return cls("No person was found in any driving frame: use a driving video that shows a person, or check "
                   "the detector/estimator model files (yolox_l.onnx, dw-ll_ucoco_384.onnx).")


def reference_size(height: int, width: int, max_area: int = REFERENCE_MAX_AREA) -> tuple[int, int]:
    """(ref_H, ref_W) of the resized photo, as the official code computes it."""
    aspect = height / width
    m = REFERENCE_MULTIPLE
    ref_h = round(np.sqrt(max_area * aspect) // m) * m
    ref_w = round(np.sqrt(max_area / aspect) // m) * m
    return int(ref_h), int(ref_w)


def resize_reference(photo: np.ndarray, max_area: int = REFERENCE_MAX_AREA) -> np.ndarray:
    """Resize the photo (uint8 [H, W, 3]) to ``reference_size`` with bicubic interpolation."""
    ref_h, ref_w = reference_size(photo.shape[0], photo.shape[1], max_area)
    return cv2.resize(photo, (ref_w, ref_h), interpolation=cv2.INTER_CUBIC)


def canvas_size(ref_hw: tuple[int, int]) -> tuple[int, int]:
    return ref_hw[0] * CANVAS_FACTOR, ref_hw[1] * CANVAS_FACTOR


@dataclass(frozen=True)
class AlignScales:
    """The official ``align_args`` (float32 values; NaN -> 1, inf kept as in the official code)."""

    scale_neck: float
    scale_face_left: float
    scale_face_right: float
    scale_shoulder: float
    scale_arm_upper: float
    scale_arm_lower: float
    scale_hand: float
    scale_body_len: float
    scale_leg_upper: float
    scale_leg_lower: float

    def as_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}


# Which body points each scale measures (for the "visible" fallback).
_SCALE_POINTS = {
    "scale_neck": (0, 1), "scale_face_left": (0, 14, 16), "scale_face_right": (0, 15, 17),
    "scale_shoulder": (2, 5), "scale_arm_upper": (2, 3, 5, 6), "scale_arm_lower": (3, 4, 6, 7),
    "scale_body_len": (1, 8, 11), "scale_leg_upper": (8, 9, 11, 12), "scale_leg_lower": (9, 10, 12, 13),
}
SCALE_FALLBACKS = ("official", "visible")


def _height_units(frame: PoseFrame, person: int = 0) -> np.ndarray:
    body = frame.bodies[person].copy()
    body[:, 0] = body[:, 0] * np.float32(frame.image_hw[1] / frame.image_hw[0])
    return body


def _norm(v: np.ndarray) -> np.float32:
    return np.linalg.norm(v)


def compute_scales(reference: PoseFrame, first: PoseFrame, fallback: str = "official") -> AlignScales:
    """Scales from person 0 of the photo pose and of the first driving frame.

    fallback="official": exactly the official values (points are used whatever their score).
    fallback="visible": a scale whose points are not all visible in both poses, or that is not
    finite, is replaced by the mean of the others (useful for upper-body photos).
    """
    if fallback not in SCALE_FALLBACKS:
        raise ValueError(f"scale fallback must be one of {SCALE_FALLBACKS}, got {fallback!r}")
    r, d = _height_units(reference), _height_units(first)

    def ratio(*pairs):
        return [_norm(r[a] - r[b]) / _norm(d[a] - d[b]) for a, b in pairs]

    with np.errstate(divide="ignore", invalid="ignore"):
        s = {}
        s["scale_neck"] = ratio((0, 1))[0]
        s["scale_face_left"] = (_norm(r[16] - r[14]) + _norm(r[14] - r[0])) / (_norm(d[16] - d[14]) + _norm(d[14] - d[0]))
        s["scale_face_right"] = (_norm(r[17] - r[15]) + _norm(r[15] - r[0])) / (_norm(d[17] - d[15]) + _norm(d[15] - d[0]))
        s["scale_shoulder"] = ratio((2, 5))[0]
        s1, s2 = ratio((2, 3), (5, 6))
        s["scale_arm_upper"] = (s1 + s2) / 2
        s1, s2 = ratio((3, 4), (6, 7))
        s["scale_arm_lower"] = (s1 + s2) / 2
        s["scale_hand"] = (s["scale_arm_upper"] + s["scale_arm_lower"]) / 2
        s["scale_body_len"] = _norm(r[1] - (r[8] + r[11]) / 2) / _norm(d[1] - (d[8] + d[11]) / 2)
        s1, s2 = ratio((8, 9), (11, 12))
        s["scale_leg_upper"] = (s1 + s2) / 2
        s1, s2 = ratio((9, 10), (12, 13))
        s["scale_leg_lower"] = (s1 + s2) / 2
    s = {k: (np.float32(1) if np.isnan(v) else v) for k, v in s.items()}

    if fallback == "visible":
        vis = reference.body_visible[0] & first.body_visible[0]
        good = {k: bool(np.isfinite(s[k]) and vis[list(p)].all()) for k, p in _SCALE_POINTS.items()}
        kept = [float(s[k]) for k, ok in good.items() if ok]
        replacement = np.float32(np.mean(kept)) if kept else np.float32(1)
        for k, ok in good.items():
            if not ok:
                s[k] = replacement
        s["scale_hand"] = (s["scale_arm_upper"] + s["scale_arm_lower"]) / 2
    return AlignScales(**{k: np.float32(v) for k, v in s.items()})


def compute_offset(reference: PoseFrame, first: PoseFrame) -> np.ndarray:
    """Centre offset ``neck_ref - neck_first`` in height units, float32 [2]."""
    return _height_units(reference)[1] - _height_units(first)[1]


def _scale_about(q: np.ndarray, c: np.ndarray, s: float) -> np.ndarray:
    """``cv2.getRotationMatrix2D(c, 0, s)`` applied to float32 points q [k, 2] -> float32 [k, 2]."""
    alpha = math.cos(0.0) * float(s)
    beta = math.sin(0.0) * float(s) if math.isfinite(s) else math.nan
    cx, cy = float(c[0]), float(c[1])
    tx = (1 - alpha) * cx - beta * cy
    ty = beta * cx + (1 - alpha) * cy
    q64 = q.astype(np.float64)
    x = q64[:, 0] * alpha + q64[:, 1] * beta + tx
    y = q64[:, 0] * -beta + q64[:, 1] * alpha + ty
    return np.stack([x, y], axis=1).astype(np.float32)


def align_person(body: np.ndarray, hands: np.ndarray, faces: np.ndarray, ratio: float, scales: AlignScales,
                 offset: np.ndarray, ref_ratio: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``align_img`` + offset + reference normalisation for one person.

    body float32 [18, 2], hands float32 [2, 21, 2], faces float32 [68, 2], normalised to the
    driving frame whose W/H is ``ratio``. Returns the same shapes normalised to the photo canvas.
    """
    r32 = np.float32(ratio)
    P = body.copy()
    Hd = hands.copy()
    F = faces.copy()
    P[:, 0] = P[:, 0] * r32
    Hd[:, :, 0] = Hd[:, :, 0] * r32
    F[:, 0] = F[:, 0] * r32
    o1416 = P[[14, 16]] - P[[0]]
    o1517 = P[[15, 17]] - P[[0]]
    o = {k: P[[k]] - P[[k - 1]] for k in (3, 4, 6, 7, 9, 10, 12, 13)}
    oh1 = Hd[1] - P[[4]]
    oh0 = Hd[0] - P[[7]]
    sc = scales
    with np.errstate(invalid="ignore", over="ignore"):
        P[[0]] = _scale_about(P[[0]], P[1], sc.scale_neck)
        P[[14, 16]] = _scale_about(o1416 + P[[0]], P[0], sc.scale_face_left)
        P[[15, 17]] = _scale_about(o1517 + P[[0]], P[0], sc.scale_face_right)
        P[[2, 5]] = _scale_about(P[[2, 5]], P[1], sc.scale_shoulder)
        P[[3]] = _scale_about(o[3] + P[[2]], P[2], sc.scale_arm_upper)
        P[[4]] = _scale_about(o[4] + P[[3]], P[3], sc.scale_arm_lower)
        Hd[1] = _scale_about(oh1 + P[[4]], P[4], sc.scale_hand)
        P[[6]] = _scale_about(o[6] + P[[5]], P[5], sc.scale_arm_upper)
        P[[7]] = _scale_about(o[7] + P[[6]], P[6], sc.scale_arm_lower)
        Hd[0] = _scale_about(oh0 + P[[7]], P[7], sc.scale_hand)
        P[[8, 11]] = _scale_about(P[[8, 11]], P[1], sc.scale_body_len)
        P[[9]] = _scale_about(o[9] + P[[8]], P[8], sc.scale_leg_upper)
        P[[10]] = _scale_about(o[10] + P[[9]], P[9], sc.scale_leg_lower)
        P[[12]] = _scale_about(o[12] + P[[11]], P[11], sc.scale_leg_upper)
        P[[13]] = _scale_about(o[13] + P[[12]], P[12], sc.scale_leg_lower)
    P[body == -1] = -1
    Hd[hands == -1] = -1
    F[faces == -1] = -1
    rr = np.float32(ref_ratio)
    out = []
    for a in (P, Hd, F):
        a = np.nan_to_num(a, nan=-1.0) + offset
        a[..., 0] = a[..., 0] / rr
        out.append(a)
    return out[0], out[1], out[2]


@dataclass
class AlignedPoses:
    """Aligned driving poses, normalised to the photo canvas.

    frames          one PoseFrame per driving frame (image_hw = canvas_hw)
    canvas_hw       (2*ref_H, 2*ref_W): the official drawing size
    ref_hw          (ref_H, ref_W): the resized photo
    scales, offset  the official align_args and centre offset
    scale_frame     index of the driving frame the scales were computed from
    """

    frames: list[PoseFrame]
    canvas_hw: tuple[int, int]
    ref_hw: tuple[int, int]
    scales: AlignScales
    offset: np.ndarray
    scale_frame: int = 0

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[PoseFrame]:
        return iter(self.frames)


class Aligner:
    """Per-frame alignment with scales fixed from (reference, first driving frame)."""

    def __init__(self, reference: PoseFrame, first: PoseFrame, scale_fallback: str = "official"):
        if reference.num_persons == 0:
            raise NoPersonError.in_reference()
        if first.num_persons == 0:
            raise NoPersonError.in_driving()
        self.ref_hw = reference.image_hw
        self.canvas_hw = canvas_size(self.ref_hw)
        self.ref_ratio = self.ref_hw[1] / self.ref_hw[0]
        self.scales = compute_scales(reference, first, scale_fallback)
        self.offset = compute_offset(reference, first)

    def __call__(self, frame: PoseFrame) -> PoseFrame:
        ratio = frame.image_hw[1] / frame.image_hw[0]
        bodies, hands, faces = [], [], []
        for n in range(frame.num_persons):
            b, h, f = align_person(frame.bodies[n], frame.hands[n], frame.faces[n], ratio, self.scales,
                                   self.offset, self.ref_ratio)
            bodies.append(b)
            hands.append(h)
            faces.append(f)
        if not bodies:
            return PoseFrame.empty(self.canvas_hw)
        return PoseFrame(np.stack(bodies), frame.body_visible, np.stack(hands), np.stack(faces), self.canvas_hw,
                         frame.scores)


def first_with_person(frames: Sequence[PoseFrame]) -> int:
    for i, f in enumerate(frames):
        if f.num_persons > 0:
            return i
    raise NoPersonError.in_driving()


def align(reference: PoseFrame, driving: PoseSequence | Sequence[PoseFrame], scale_fallback: str = "official") -> AlignedPoses:
    """Align every driving frame to the photo pose (see module docstring).

    Scales come from the first driving frame that has a person (frame 0 in the official setting).
    Frames without a person stay empty.
    """
    frames = list(driving)
    k = first_with_person(frames)
    aligner = Aligner(reference, frames[k], scale_fallback)
    return AlignedPoses([aligner(f) for f in frames], aligner.canvas_hw, aligner.ref_hw, aligner.scales,
                        aligner.offset, k)


def iter_align(reference: PoseFrame, driving: Iterable[PoseFrame], scale_fallback: str = "official") -> Iterator[PoseFrame]:
    """Streaming variant of ``align``: scales from the first frame with a person; earlier empty frames pass through."""
    aligner = None
    pending = 0
    for f in driving:
        if aligner is None:
            if f.num_persons == 0:
                pending += 1
                continue
            aligner = Aligner(reference, f, scale_fallback)
            for _ in range(pending):
                yield PoseFrame.empty(aligner.canvas_hw)
        yield aligner(f)
    if aligner is None and pending:
        raise NoPersonError.in_driving()
