"""PoseSequence <-> OpenPose JSON (the POSE_KEYPOINT format of comfyui_controlnet_aux): exact round trip, the other
writers' conventions (pixels or normalised, nested lists, 70-point faces, missing parts, BODY_25), person choice,
frames without a person and readable errors."""
import json

import numpy as np
import pytest

import pose
from pose.openpose_json import BODY25_TO_BODY18, frame_to_openpose
from pose.types import PoseFrame, PoseSequence

H, W = 480, 640


def _frame(n=1, shift=0.0, image_hw=(H, W), seed=0) -> PoseFrame:
    rng = np.random.default_rng(seed)
    bodies = (rng.uniform(0.1, 0.9, (n, 18, 2)) + shift).astype(np.float32)
    visible = rng.uniform(size=(n, 18)) > 0.2
    visible[:, 1] = True
    hands = rng.uniform(0.1, 0.9, (n, 2, 21, 2)).astype(np.float32)
    hands[:, 1, 5:9] = -1                     # some hand points missing
    hands[:, 0] = -1                          # a whole hand missing
    faces = rng.uniform(0.1, 0.9, (n, 68, 2)).astype(np.float32)
    faces[:, :10] = -1
    return PoseFrame(bodies, visible, hands, faces, image_hw)


def _assert_same(a: PoseFrame, b: PoseFrame):
    assert a.image_hw == b.image_hw and a.num_persons == b.num_persons
    for name in ("bodies", "body_visible", "hands", "faces"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_round_trip_is_exact_and_json_serialisable():
    frames = [_frame(2, seed=1), _frame(1, seed=2, image_hw=(720, 1280)), _frame(1, seed=3)]
    data = pose.to_openpose_json(PoseSequence(frames, (H, W)))
    text = json.dumps(data)
    for source in (data, json.loads(text), text):
        back = pose.from_openpose_json(source, person="all")
        assert len(back) == 3 and back.image_hw == (H, W) and back.missing_frames == ()
        for a, b in zip(frames, back):
            _assert_same(a, b)
    first = data[0]
    assert (first["canvas_width"], first["canvas_height"]) == (W, H)
    person = first["people"][0]
    assert len(person["pose_keypoints_2d"]) == 18 * 3 and len(person["face_keypoints_2d"]) == 70 * 3
    assert len(person["hand_left_keypoints_2d"]) == len(person["hand_right_keypoints_2d"]) == 21 * 3
    body = np.array(person["pose_keypoints_2d"]).reshape(18, 3)
    np.testing.assert_allclose(body[:, :2], frames[0].bodies[0] * [W, H], rtol=1e-6)   # pixels
    assert (body[:, 2] == frames[0].body_visible[0]).all()
    assert not any(person["hand_left_keypoints_2d"])                                   # missing hand: zeros
    face = np.array(person["face_keypoints_2d"]).reshape(70, 3)
    np.testing.assert_allclose(face[68:, :2], frames[0].bodies[0, [14, 15]] * [W, H], rtol=1e-6)  # the pupils


def _aux_style(frame: PoseFrame, normalised: bool, nested: bool = False) -> dict:
    """What comfyui_controlnet_aux writes: invisible / missing points as 0, 0, 0; None for absent parts."""
    h, w = frame.image_hw
    scale = np.array([1.0, 1.0]) if normalised else np.array([w, h], np.float64)

    def part(points, present):
        rows = [[*(p * scale), 1.0] if ok else [0.0, 0.0, 0.0] for p, ok in zip(points.astype(np.float64), present)]
        return rows if nested else [v for r in rows for v in r]

    person = frame.select([0])
    hands = person.hands[0]
    return {"people": [{
        "pose_keypoints_2d": part(person.bodies[0], person.body_visible[0]),
        "face_keypoints_2d": part(person.faces[0], (person.faces[0] != -1).all(-1)),
        "hand_left_keypoints_2d": None,
        "hand_right_keypoints_2d": part(hands[1], (hands[1] != -1).all(-1)),
    }], "canvas_width": w, "canvas_height": h}


@pytest.mark.parametrize("normalised", [False, True], ids=["pixels", "normalised"])
@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_other_writers_are_read(normalised, nested):
    frame = _frame(seed=4)
    back = pose.from_openpose_json([_aux_style(frame, normalised, nested)])[0]
    vis = frame.body_visible[0]
    np.testing.assert_allclose(back.bodies[0][vis], frame.bodies[0][vis], atol=1e-6)
    assert (back.body_visible == frame.body_visible).all()
    assert (back.bodies[0][~vis] == 0).all()                  # no coordinates for points that were not detected
    np.testing.assert_allclose(back.hands, frame.hands, atol=1e-6)
    np.testing.assert_allclose(back.faces, frame.faces, atol=1e-6)
    assert pose.render(back, (H, W)).shape == (H, W, 3)


def test_normalised_points_just_outside_the_canvas_stay_normalised():
    frame = _frame(shift=0.3, seed=5)                          # some points beyond 1.0 (feet below the frame)
    assert frame.bodies.max() > 1.0
    data = _aux_style(frame, normalised=True)
    back = pose.from_openpose_json(data)[0]
    vis = frame.body_visible[0]
    np.testing.assert_allclose(back.bodies[0][vis], frame.bodies[0][vis], atol=1e-6)


def test_body_25_is_mapped_to_the_18_points():
    frame = _frame(seed=6)
    d = frame_to_openpose(frame)
    body18 = np.array(d["people"][0]["pose_keypoints_2d"]).reshape(18, 3)
    body25 = np.zeros((25, 3))
    body25[list(BODY25_TO_BODY18)] = body18
    body25[8] = [123.0, 234.0, 1.0]                           # mid-hip: not an OpenPose-18 point
    d["people"][0]["pose_keypoints_2d"] = body25.ravel().tolist()
    back = pose.from_openpose_json(d)[0]
    np.testing.assert_array_equal(back.bodies, frame.bodies)
    np.testing.assert_array_equal(back.body_visible, frame.body_visible)


def test_person_choice_and_frames_without_a_person():
    small = _frame(seed=7)
    small = small.replace(bodies=(small.bodies - 0.5) * 0.2 + 0.5)
    big = _frame(seed=8)
    two = PoseFrame(np.concatenate([small.bodies, big.bodies]), np.concatenate([small.body_visible, big.body_visible]),
                    np.concatenate([small.hands, big.hands]), np.concatenate([small.faces, big.faces]), (H, W))
    empty = {"people": [], "canvas_width": W, "canvas_height": H}
    data = [empty, frame_to_openpose(two), empty]
    held = pose.from_openpose_json(data)
    assert held.missing_frames == (0, 2) and held.filled_frames == (0, 2)
    assert all(f.num_persons == 1 for f in held)
    _assert_same(held[0], small)                               # "highest": the first person listed
    _assert_same(pose.from_openpose_json(data, person="largest")[1], big)
    assert pose.from_openpose_json(data, person="all")[1].num_persons == 2
    left = pose.from_openpose_json(data, no_person="empty")
    assert left.filled_frames == () and left[0].num_persons == 0 and left[0].image_hw == (H, W)
    with pytest.raises(pose.NoPersonError):
        pose.from_openpose_json([empty, empty])


@pytest.mark.parametrize("data, message", [
    ([], "no frames"),
    ("not json", "not valid JSON"),
    ([{"animals": [], "canvas_width": W, "canvas_height": H}], "animal keypoints"),
    ([{"people": [{"pose_keypoints_2d": [1.0, 2.0, 1.0] * 18}]}], "frame 0 has no canvas_width"),
    ([{"people": [], "canvas_width": W, "canvas_height": H},
      {"people": [{"pose_keypoints_2d": [1.0, 2.0, 1.0] * 17}], "canvas_width": W, "canvas_height": H}],
     "frame 1, person 0: pose_keypoints_2d has 17 points, expected 18"),
    ([{"people": [{"pose_keypoints_2d": [1.0, 2.0, 1.0] * 18, "hand_left_keypoints_2d": ["a"] * 63}],
       "canvas_width": W, "canvas_height": H}], "hand_left_keypoints_2d is not a list of x, y, confidence"),
])
def test_errors_name_the_frame_and_the_field(data, message):
    with pytest.raises(ValueError, match=message):
        pose.from_openpose_json(data)


def test_frames_without_a_canvas_take_the_given_size():
    data = [{"people": [{"pose_keypoints_2d": [64.0, 48.0, 1.0] * 18}]}]
    frame = pose.from_openpose_json(data, image_hw=(H, W))[0]
    assert frame.image_hw == (H, W)
    np.testing.assert_allclose(frame.bodies[0, 0], [0.1, 0.1], atol=1e-7)
