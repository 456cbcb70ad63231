"""PoseSequence <-> OpenPose JSON, the keypoint format other ComfyUI packs pass around (``POSE_KEYPOINT`` of
comfyui_controlnet_aux's DWPose / OpenPose preprocessors and of the pose editors).

The format: a list with one dict per frame::

    {"people": [{"pose_keypoints_2d": [x, y, c] * 18,          # OpenPose-18 (COCO) body; BODY_25 is read too
                 "face_keypoints_2d": [x, y, c] * 70,          # 68 face points + the two pupils (68 is read too)
                 "hand_left_keypoints_2d": [x, y, c] * 21,
                 "hand_right_keypoints_2d": [x, y, c] * 21}],
     "canvas_width": W, "canvas_height": H}

Flat ``[x, y, c, ...]`` lists (what the preprocessors write) and nested ``[[x, y, c], ...]`` lists are both read.
A point with ``c == 0`` is not detected. Coordinates are pixels of the canvas (DWPose in comfyui_controlnet_aux,
OpenPose itself) or normalised to it (its OpenPose preprocessor, some editors); each keypoint array is read as
pixels when any of its detected coordinates exceeds ``NORMALISED_LIMIT``, else as normalised (per array, as the
writers mix them; a threshold above 1 keeps normalised points just outside the canvas normalised).

Written by ``to_openpose_json``: pixel coordinates of the frame the poses were detected in, ``c`` = 1 for visible
points and 0 otherwise; body points that are not visible keep their coordinates (with ``c`` = 0, which readers
treat as missing), so ``from_openpose_json(to_openpose_json(seq))`` gives back ``seq``'s keypoints exactly
(the official alignment measures the photo-to-driving scales on body points whatever their score). Hand and
face points that are missing (``(-1, -1)`` here) are written as ``0, 0, 0``; arrays are always complete.

Hands: ``hand_left`` is the person's left hand (COCO-WholeBody's, attached to body point 7, L-wrist) =
``PoseFrame.hands[n, 0]``; ``hand_right`` = ``hands[n, 1]``.
"""
from __future__ import annotations

import json
import math
from typing import Iterable, Mapping

import numpy as np

from .types import NUM_BODY, NUM_FACE, NUM_HAND, PoseFrame, PoseSequence
from .wholebody import MISSING_MODES, PERSON_MODES, fill_missing

BODY_KEY = "pose_keypoints_2d"
FACE_KEY = "face_keypoints_2d"
HAND_KEYS = ("hand_left_keypoints_2d", "hand_right_keypoints_2d")   # PoseFrame.hands[:, 0], hands[:, 1]

# BODY_25 (OpenPose's default model) -> OpenPose-18: point j of the 18 is point BODY25_TO_BODY18[j] of the 25
# (25 adds the mid-hip at 8 and six foot points at 19..24).
BODY25_TO_BODY18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
NUM_BODY25 = 25
# OpenPose's face has 70 points: the 68 landmarks, then the right and the left pupil; they are written from the
# body's eyes (points 14 = R-eye, 15 = L-eye), as comfyui_controlnet_aux does for DWPose's 68-point faces.
NUM_FACE_OPENPOSE = 70
FACE_PUPILS_FROM_BODY = (14, 15)

NORMALISED_LIMIT = 2.0      # a keypoint array with a detected |coordinate| above this is in pixels
# bounds of what is read (a POSE_KEYPOINT may come from any pack or a hand-written file)
MAX_FRAMES = 100_000        # over an hour at 24 fps (ExtractPose's max_frames range)
MAX_PEOPLE = 100            # persons in one frame
MAX_CANVAS_SIDE = 16384     # canvas_width / canvas_height
MAX_CANVAS_OFFSETS = 100.0  # a coordinate more than this many canvas sizes away is not a pose


class OpenPoseJSONError(ValueError):
    """POSE_KEYPOINT data that cannot be read as human OpenPose keypoints (the message names the frame and field)."""


# ------------------------------------------------------------------------------------------------------- write
def _points(xy: np.ndarray, confidence: np.ndarray, size_wh: np.ndarray) -> list:
    """[k, 2] normalised float32 points + [k] confidences -> flat [x, y, c] * k in pixels (Python floats)."""
    pixels = xy.astype(np.float64) * size_wh
    return np.concatenate([pixels, confidence.astype(np.float64)[:, None]], axis=1).ravel().tolist()


def _missing(points: np.ndarray) -> np.ndarray:
    return (points == -1).any(axis=-1) | ~np.isfinite(points).all(axis=-1)


def _detected_points(points: np.ndarray, size_wh: np.ndarray) -> list:
    """Hand / face points, (-1, -1) = missing -> [x, y, 1] in pixels, or [0, 0, 0] where missing."""
    gone = _missing(points)
    xy = np.where(gone[:, None], np.float32(0), points)
    return _points(xy, (~gone).astype(np.float32), size_wh)


def frame_to_openpose(frame: PoseFrame) -> dict:
    """One frame's OpenPose dict (pixel coordinates of ``frame.image_hw``; see the module docstring)."""
    h, w = frame.image_hw
    size = np.array([w, h], np.float64)
    people = []
    for n in range(frame.num_persons):
        visible = frame.body_visible[n].astype(np.float32)
        face = _detected_points(frame.faces[n], size)
        pupils = list(FACE_PUPILS_FROM_BODY)
        face += _points(frame.bodies[n, pupils], visible[pupils], size)
        people.append({
            BODY_KEY: _points(frame.bodies[n], visible, size),
            FACE_KEY: face,
            HAND_KEYS[0]: _detected_points(frame.hands[n, 0], size),
            HAND_KEYS[1]: _detected_points(frame.hands[n, 1], size),
        })
    return {"people": people, "canvas_height": int(h), "canvas_width": int(w)}


def to_openpose_json(poses: PoseSequence | Iterable[PoseFrame]) -> list:
    """OpenPose JSON of every frame (a list of dicts, JSON-serialisable), e.g. for ``POSE_KEYPOINT`` consumers."""
    return [frame_to_openpose(frame) for frame in poses]


# -------------------------------------------------------------------------------------------------------- read
def _array(values, count: int, what: str, where: str) -> np.ndarray | None:
    """A keypoint list (flat or nested) -> float64 [k, 3], or None when absent/empty. Only numbers are read, and
    only finite ones; the length is checked before anything is converted."""
    if values is None:
        return None
    if not isinstance(values, (list, tuple, np.ndarray)):
        raise OpenPoseJSONError(f"{where}: {what} is a {type(values).__name__}, not a list of x, y, confidence "
                                "numbers")
    if len(values) == 0:
        return None
    if len(values) not in (count, 3 * count):
        raise OpenPoseJSONError(f"{where}: {what} has {_points_in(values)} points, expected {count}")
    try:
        array = np.asarray(values)
    except (TypeError, ValueError):
        array = np.asarray([], dtype=object)
    if array.dtype.kind not in "iuf" or array.size != 3 * count:
        raise OpenPoseJSONError(f"{where}: {what} is not a list of x, y, confidence numbers") from None
    array = array.astype(np.float64).reshape(-1, 3)
    if not np.isfinite(array).all():
        raise OpenPoseJSONError(f"{where}: {what} holds NaN or infinite values; write finite numbers (0, 0, 0 for "
                                "a point that was not detected)")
    if float(np.abs(array[:, :2]).max()) > MAX_CANVAS_SIDE * MAX_CANVAS_OFFSETS:
        raise OpenPoseJSONError(f"{where}: {what} has coordinates beyond {MAX_CANVAS_SIDE * MAX_CANVAS_OFFSETS:g} "
                                "pixels; check the coordinates")
    return array


def _side(value, name: str, where: str) -> int:
    """A canvas side (a number, or its text) as a positive integer within MAX_CANVAS_SIDE."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not 1 <= number <= MAX_CANVAS_SIDE:                 # NaN fails too
        raise OpenPoseJSONError(f"{where}: {name} is {str(value)[:40]!r}; it must be a pixel count from 1 to "
                                f"{MAX_CANVAS_SIDE}")
    return int(number)


def _normalised(points: np.ndarray, size_wh: np.ndarray) -> np.ndarray:
    """[k, 3] points -> float32 [k, 2] normalised to the canvas (pixels detected per array, see NORMALISED_LIMIT)."""
    detected = points[:, 2] > 0
    coords = points[detected, :2] if detected.any() else points[:, :2]
    xy = points[:, :2]
    if coords.size and np.abs(coords).max() > NORMALISED_LIMIT:
        xy = xy / size_wh
    return xy.astype(np.float32)


def _detected_part(points: np.ndarray | None, count: int, size_wh: np.ndarray) -> np.ndarray:
    """Hand / face points -> float32 [count, 2] normalised, (-1, -1) where not detected."""
    if points is None:
        return np.full((count, 2), -1, np.float32)
    xy = _normalised(points, size_wh)
    xy[points[:, 2] <= 0] = -1
    return xy


def _points_in(values) -> int:
    """How many points a flat or nested keypoint list holds (its length only; nothing is converted)."""
    if not isinstance(values, (list, tuple, np.ndarray)) or len(values) == 0:
        return 0
    return len(values) if isinstance(values[0], (list, tuple, np.ndarray)) else len(values) // 3


def _body(person: Mapping, where: str):
    values = person.get(BODY_KEY)
    if _points_in(values) == NUM_BODY25:
        return _array(values, NUM_BODY25, BODY_KEY, where)[list(BODY25_TO_BODY18)]
    return _array(values, NUM_BODY, BODY_KEY, where)


def _face(person: Mapping, where: str):
    values = person.get(FACE_KEY)
    if _points_in(values) == NUM_FACE_OPENPOSE:
        return _array(values, NUM_FACE_OPENPOSE, FACE_KEY, where)[:NUM_FACE]
    return _array(values, NUM_FACE, FACE_KEY, where)


def _canvas(data: Mapping, where: str, image_hw) -> tuple[int, int]:
    if "canvas_height" in data and "canvas_width" in data:
        return _side(data["canvas_height"], "canvas_height", where), _side(data["canvas_width"], "canvas_width", where)
    if image_hw is not None:
        return _side(image_hw[0], "the given height", where), _side(image_hw[1], "the given width", where)
    raise OpenPoseJSONError(f"{where} has no canvas_width / canvas_height: the keypoints cannot be placed; "
                            "give the size of the frames they were detected in")


def _placed(xy: np.ndarray, what: str, where: str) -> np.ndarray:
    """Normalised points, refused when any lies more than MAX_CANVAS_OFFSETS canvas sizes away."""
    if xy.size and float(np.abs(xy[xy != -1]).max(initial=0.0)) > MAX_CANVAS_OFFSETS:
        raise OpenPoseJSONError(f"{where}: {what} has points more than {MAX_CANVAS_OFFSETS:g} canvas sizes away from "
                                "the canvas; check canvas_width / canvas_height and the coordinates")
    return xy


def _largest(frame: PoseFrame) -> int:
    areas = []
    for n in range(frame.num_persons):
        pts = frame.bodies[n][frame.body_visible[n]] * np.array(frame.image_hw[::-1], np.float32)
        areas.append(float(np.prod(pts.max(0) - pts.min(0))) if len(pts) else 0.0)
    return int(np.argmax(areas))


def frame_from_openpose(data: Mapping, index: int = 0, image_hw=None, person: str = PERSON_MODES[0]) -> PoseFrame:
    """One OpenPose dict -> PoseFrame (people without a visible body point are dropped, as in extraction).

    person: "highest" keeps the first person listed (the format has no person score; DWPose writers list the best
    detection first), "largest" the one with the largest body box, "all" every person. image_hw: the canvas when
    the dict has none."""
    where = f"POSE_KEYPOINT frame {index}"
    if not isinstance(data, Mapping):
        raise OpenPoseJSONError(f"{where} is a {type(data).__name__}, expected a dict with 'people'")
    if "people" not in data:
        if "animals" in data:
            raise OpenPoseJSONError(f"{where} holds animal keypoints (AP10K); SteadyDancer needs human OpenPose "
                                    "keypoints (e.g. from a DWPose or OpenPose preprocessor)")
        raise OpenPoseJSONError(f"{where} has no 'people' list; is this OpenPose JSON?")
    h, w = _canvas(data, where, image_hw)
    size = np.array([w, h], np.float64)
    people = data["people"] or []
    if not isinstance(people, (list, tuple)):
        raise OpenPoseJSONError(f"{where}: 'people' is a {type(people).__name__}, expected a list of persons")
    if len(people) > MAX_PEOPLE:
        raise OpenPoseJSONError(f"{where} lists {len(people)} people; at most {MAX_PEOPLE} are read")
    bodies, visible, hands, faces = [], [], [], []
    for n, entry in enumerate(people):
        here = f"{where}, person {n}"
        if not isinstance(entry, Mapping):
            raise OpenPoseJSONError(f"{here} is a {type(entry).__name__}, expected a dict of keypoint lists")
        body = _body(entry, here)
        if body is None or not (body[:, 2] > 0).any():
            continue
        bodies.append(_placed(_normalised(body, size), BODY_KEY, here))
        visible.append(body[:, 2] > 0)
        hands.append(np.stack([_placed(_detected_part(_array(entry.get(k), NUM_HAND, k, here), NUM_HAND, size), k,
                                       here) for k in HAND_KEYS]))
        faces.append(_placed(_detected_part(_face(entry, here), NUM_FACE, size), FACE_KEY, here))
    if not bodies:
        return PoseFrame.empty((h, w))
    frame = PoseFrame(np.stack(bodies), np.stack(visible), np.stack(hands), np.stack(faces), (h, w))
    if person not in PERSON_MODES:
        raise ValueError(f"person must be one of {PERSON_MODES}, got {person!r}")
    if person == "all" or frame.num_persons == 1:
        return frame
    return frame.select([0 if person == "highest" else _largest(frame)])


def from_openpose_json(data, person: str = PERSON_MODES[0], no_person: str = MISSING_MODES[0], image_hw=None) -> PoseSequence:
    """OpenPose JSON (a list of frame dicts, one dict, or its JSON text) -> PoseSequence.

    person: see ``frame_from_openpose``. no_person: frames without a person are held at the nearest earlier pose
    ("hold") or left empty ("empty"), as in extraction; both are listed in ``missing_frames`` / ``filled_frames``.
    image_hw: (H, W) for frames without canvas_width / canvas_height.
    """
    if no_person not in MISSING_MODES:
        raise ValueError(f"no_person must be one of {MISSING_MODES}, got {no_person!r}")
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except (ValueError, RecursionError) as err:
            raise OpenPoseJSONError(f"POSE_KEYPOINT text is not valid JSON: {str(err)[:120]}") from None
    if isinstance(data, Mapping):
        data = [data]
    if not isinstance(data, (list, tuple)) or not data:
        raise OpenPoseJSONError("POSE_KEYPOINT holds no frames: expected a list with one OpenPose dict per frame")
    if len(data) > MAX_FRAMES:
        raise OpenPoseJSONError(f"POSE_KEYPOINT holds {len(data)} frames; at most {MAX_FRAMES} are read (cut the "
                                "driving video)")
    frames = [frame_from_openpose(d, i, image_hw, person) for i, d in enumerate(data)]
    missing = tuple(i for i, f in enumerate(frames) if f.num_persons == 0)
    filled = fill_missing(frames, no_person)
    return PoseSequence(frames, frames[0].image_hw, missing, filled)
