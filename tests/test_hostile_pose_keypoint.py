"""POSE_KEYPOINT from other packs or hand-written files: wrong types, NaN / Inf, absurd sizes and counts are one
``OpenPoseJSONError`` naming the frame, the person and the field, never an error deep in rendering."""
import math

import numpy as np
import pytest

import pose
from pose.openpose_json import MAX_FRAMES, MAX_PEOPLE

W, H = 640, 480
BODY = [[64.0 + 10 * j, 48.0 + 12 * j, 1.0] for j in range(18)]


def _frame(people=None, **extra):
    data = {"people": [{"pose_keypoints_2d": [v for p in BODY for v in p]}] if people is None else people,
            "canvas_width": W, "canvas_height": H}
    data.update(extra)
    return data


def _person(**fields):
    person = {"pose_keypoints_2d": [v for p in BODY for v in p]}
    person.update(fields)
    return [person]


def _with_body_value(index, value):
    flat = [v for p in BODY for v in p]
    flat[index] = value
    return _person(pose_keypoints_2d=flat)


@pytest.mark.parametrize("frames, message", [
    ([_frame(), _frame(people=7)], "frame 1: 'people' is a int, expected a list of persons"),
    ([_frame(people={"a": 1})], "frame 0: 'people' is a dict"),
    ([_frame(people=_with_body_value(0, math.nan))], "frame 0, person 0: pose_keypoints_2d holds NaN or infinite"),
    ([_frame(people=_with_body_value(4, math.inf))], "person 0: pose_keypoints_2d holds NaN or infinite"),
    ([_frame(people=_with_body_value(2, -math.inf))], "person 0: pose_keypoints_2d holds NaN or infinite"),
    ([_frame(people=_with_body_value(0, 1e300))], "pose_keypoints_2d has coordinates beyond"),
    ([_frame(people=_with_body_value(0, 1e6))], "pose_keypoints_2d has points more than 100 canvas sizes away"),
    ([_frame(people=_with_body_value(0, "12"))], "pose_keypoints_2d is not a list of x, y, confidence numbers"),
    ([_frame(people=_with_body_value(0, None))], "pose_keypoints_2d is not a list of x, y, confidence numbers"),
    ([_frame(people=_person(pose_keypoints_2d="0 0 1"))], "pose_keypoints_2d is a str"),
    ([_frame(people=_person(face_keypoints_2d={"x": 1}))], "face_keypoints_2d is a dict"),
    ([_frame(people=_person(hand_left_keypoints_2d=[math.nan] * 63))], "hand_left_keypoints_2d holds NaN"),
    ([_frame(people=_person(hand_right_keypoints_2d=list(range(10 ** 6))))],
     "hand_right_keypoints_2d has 333333 points, expected 21"),
    ([_frame(people=_person() * (MAX_PEOPLE + 1))], f"lists {MAX_PEOPLE + 1} people; at most {MAX_PEOPLE}"),
    ([_frame(canvas_width=math.inf)], "canvas_width is 'inf'; it must be a pixel count from 1 to 16384"),
    ([_frame(canvas_height=math.nan)], "canvas_height is 'nan'"),
    ([_frame(canvas_width=10 ** 12)], "canvas_width is '1000000000000'"),
    ([_frame(canvas_width=-5)], "canvas_width is '-5'"),
    ([_frame(canvas_width=[640])], "canvas_width is '\\[640\\]'"),
    ([_frame(people=["person"])], "frame 0, person 0 is a str"),
    ("[" * 100000 + "]" * 100000, "not valid JSON"),
])
def test_hostile_keypoints_are_one_error_naming_the_frame_and_field(frames, message):
    with pytest.raises(pose.OpenPoseJSONError, match=message) as info:
        pose.from_openpose_json(frames)
    assert "\n" not in str(info.value)


def test_too_many_frames_are_refused_before_reading_them():
    class Huge(list):
        def __len__(self):
            return MAX_FRAMES + 1

    with pytest.raises(pose.OpenPoseJSONError, match=f"{MAX_FRAMES + 1} frames; at most {MAX_FRAMES}"):
        pose.from_openpose_json(Huge([_frame()]))


def test_unusual_but_valid_keypoints_still_read_and_render():
    frames = [_frame(canvas_width="640", canvas_height=480.0),                     # sizes as text or floats
              _frame(people=_person(hand_left_keypoints_2d=[0.0] * 63, face_keypoints_2d=[])),
              _frame(people=None, canvas_width=W, canvas_height=H)]
    frames[2]["people"] = None                                                      # no person: held
    sequence = pose.from_openpose_json(frames)
    assert len(sequence) == 3 and sequence.missing_frames == (2,)
    image = pose.render(sequence[0], (H, W))
    assert image.shape == (H, W, 3) and image.dtype == np.uint8 and image.any()
