"""Detect -> estimate -> OpenPose-18 body (+ neck) + 2x21 hands + 68 face, as the official code builds it.

Per image: resize so the short side is ``detect_resolution`` (sides rounded to multiples of 64,
bicubic when enlarging, area otherwise), detect persons, estimate 133 COCO-WholeBody keypoints per
box (the whole image when no box survives, as the official code does), insert the neck (mean of
the shoulders), reorder to OpenPose, normalise by the resized size, then apply the official
thresholds: body point visible if score > 0.35; hand/face points with score < 0.35 become (-1, -1);
body points keep their coordinates whatever their score.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np

from .align import NoPersonError, resize_reference
from .detector import DetectorConfig, PersonDetector
from .estimator import WholeBodyEstimator
from .types import PoseFrame, PoseSequence


DETECT_RESOLUTION = 1024
RESOLUTION_MULTIPLE = 64
KEYPOINT_THRESHOLD = 0.35
NECK_SHOULDER_THRESHOLD = 0.3
PERSON_MODES = ("highest", "largest", "all")
MISSING_MODES = ("hold", "empty")

# OpenPose index <- COCO index (after the neck has been inserted at 17); others keep their index.
_OPENPOSE_FROM = {1: 17, 2: 6, 3: 8, 4: 10, 6: 7, 7: 9, 8: 12, 9: 14, 10: 16, 12: 13, 13: 15, 14: 2, 15: 1, 16: 4, 17: 3}
FACE = slice(24, 92)
LEFT_HAND = slice(92, 113)
RIGHT_HAND = slice(113, 134)


def detection_size(height: int, width: int, resolution: int = DETECT_RESOLUTION) -> tuple[int, int]:
    k = float(resolution) / min(height, width)
    m = RESOLUTION_MULTIPLE
    return int(np.round(height * k / m)) * m, int(np.round(width * k / m)) * m


def resize_for_detection(image: np.ndarray, resolution: int = DETECT_RESOLUTION) -> np.ndarray:
    h, w = detection_size(image.shape[0], image.shape[1], resolution)
    k = float(resolution) / min(image.shape[:2])
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA)


def to_openpose(keypoints: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[K, 133, 2] + [K, 133] -> [K, 134, 2] + [K, 134] with the neck inserted and OpenPose body order."""
    neck = keypoints[:, [5, 6]].mean(axis=1)
    neck_score = ((scores[:, 5] > NECK_SHOULDER_THRESHOLD) & (scores[:, 6] > NECK_SHOULDER_THRESHOLD)).astype(np.float32)
    kp = np.insert(keypoints, 17, neck, axis=1)
    sc = np.insert(scores, 17, neck_score, axis=1)
    dst = list(_OPENPOSE_FROM)
    src = [_OPENPOSE_FROM[d] for d in dst]
    kp[:, dst] = kp[:, src]
    sc[:, dst] = sc[:, src]
    return kp, sc


def build_frame(keypoints: np.ndarray, scores: np.ndarray, box_scores: np.ndarray, resized_hw: tuple[int, int],
                image_hw: tuple[int, int]) -> PoseFrame:
    """Official pose dict semantics from pixel keypoints of the resized image."""
    kp, sc = to_openpose(keypoints.astype(np.float32), scores.astype(np.float32))
    kp[..., 0] /= np.float32(resized_hw[1])
    kp[..., 1] /= np.float32(resized_hw[0])
    bodies = kp[:, :18].copy()
    visible = sc[:, :18] > KEYPOINT_THRESHOLD
    kp[sc < KEYPOINT_THRESHOLD] = -1
    hands = np.stack([kp[:, LEFT_HAND], kp[:, RIGHT_HAND]], axis=1)
    return PoseFrame(bodies, visible, hands, kp[:, FACE], image_hw, box_scores)


def choose_persons(frame: PoseFrame, boxes: np.ndarray, person: str) -> PoseFrame:
    if person == "all" or frame.num_persons <= 1:
        return frame
    if person == "highest":
        return frame.select([0])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return frame.select([int(np.argmax(area))])


@dataclass
class WholeBody:
    """Detector + estimator pair. ``__call__(images)`` -> one PoseFrame per image (N=0: no person)."""

    detector: PersonDetector
    estimator: WholeBodyEstimator
    person: str = PERSON_MODES[0]
    detect_resolution: int = DETECT_RESOLUTION

    def __post_init__(self) -> None:
        if self.person not in PERSON_MODES:
            raise ValueError(f"person must be one of {PERSON_MODES}, got {self.person!r}")

    @classmethod
    def load(cls, detector_path, estimator_path, person: str = PERSON_MODES[0], providers: Sequence[str] | None = None,
             batch_size: int = 8, flip_test: bool = True, detector_config: DetectorConfig = DetectorConfig(),
             detect_resolution: int = DETECT_RESOLUTION) -> "WholeBody":
        return cls(PersonDetector(detector_path, providers, detector_config, batch_size),
                   WholeBodyEstimator(estimator_path, providers, flip_test, 2 * batch_size), person, detect_resolution)

    def __call__(self, images: Sequence[np.ndarray]) -> list[PoseFrame]:
        for im in images:
            if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
                raise ValueError(f"pose extraction needs uint8 RGB images [H, W, 3], got {im.dtype} {im.shape}")
        resized = [resize_for_detection(im, self.detect_resolution) for im in images]
        boxes = self.detector.detect(resized)
        # No box: the official code estimates on the whole image.
        est_boxes = [b if len(b) else np.array([[0, 0, r.shape[1], r.shape[0], 0]], np.float32)
                     for b, r in zip(boxes, resized)]
        results = self.estimator.estimate(resized, est_boxes)
        frames = []
        for im, r, b, (kp, sc) in zip(images, resized, est_boxes, results):
            frame = build_frame(kp, sc, b[:, 4], r.shape[:2], im.shape[:2])
            keep = [n for n in range(frame.num_persons) if frame.body_visible[n].any()]
            frame, b = frame.select(keep), b[keep]
            frames.append(choose_persons(frame, b, self.person))
        return frames


def _batches(frames: Iterable[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    it = iter(frames)
    while batch := list(islice(it, size)):
        yield batch


def iter_extract(frames: Iterable[np.ndarray], model: WholeBody, batch_size: int = 8) -> Iterator[PoseFrame]:
    """Stream: frames are consumed ``batch_size`` at a time; only keypoints are kept."""
    for batch in _batches(frames, batch_size):
        yield from model(batch)


def fill_missing(frames: list, no_person: str) -> tuple[int, ...]:
    """Frames without a person, in place: "hold" replaces each by the nearest earlier pose (the first pose for
    leading ones; NoPersonError when no frame has one), "empty" leaves them. Returns the indices filled."""
    if no_person not in MISSING_MODES:
        raise ValueError(f"no_person must be one of {MISSING_MODES}, got {no_person!r}")
    missing = [i for i, f in enumerate(frames) if f.num_persons == 0]
    if not missing or no_person == "empty":
        return ()
    if len(missing) == len(frames):
        raise NoPersonError.in_driving()
    last = next(f for f in frames if f.num_persons)
    for i, f in enumerate(frames):
        if f.num_persons:
            last = f
        else:
            frames[i] = last.replace(image_hw=f.image_hw)
    return tuple(missing)


def extract(frames: Iterable[np.ndarray], model: WholeBody, batch_size: int = 8, no_person: str = MISSING_MODES[0],
            progress: Callable[[int], None] | None = None) -> PoseSequence:
    """Poses of every frame. ``no_person``: "hold" repeats the nearest earlier pose (the first pose for
    leading frames), "empty" leaves the frame empty (drawn black). Missing frames are reported."""
    if no_person not in MISSING_MODES:
        raise ValueError(f"no_person must be one of {MISSING_MODES}, got {no_person!r}")
    out: list[PoseFrame] = []
    missing: list[int] = []
    image_hw = None
    for i, frame in enumerate(iter_extract(frames, model, batch_size)):
        image_hw = image_hw or frame.image_hw
        if frame.num_persons == 0:
            missing.append(i)
        out.append(frame)
        if progress is not None:
            progress(i + 1)
    if image_hw is None:
        raise ValueError("no frames to extract poses from: the driving video is empty.")
    filled = fill_missing(out, no_person)          # the caller says it (``missing_note``): not logged twice
    return PoseSequence(out, image_hw, tuple(missing), filled)


def extract_reference(photo: np.ndarray, model: WholeBody) -> tuple[PoseFrame, np.ndarray]:
    """Resize the photo as the official code does and detect its pose -> (pose, resized photo).

    Raises NoPersonError (naming the fix) when no person is visible.
    """
    resized = resize_reference(photo)
    frame = model([resized])[0]
    if frame.num_persons == 0:
        raise NoPersonError.in_reference()
    return frame, resized
