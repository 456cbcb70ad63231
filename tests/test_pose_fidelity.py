"""Alignment, rendering and seeded augmentation against the official reference fixtures (bit-exact)."""
import json

import cv2
import numpy as np
import pytest

from conftest import fixture_file
from pose.align import align, reference_size
from pose.augment import augment
from pose.render import render
from pose.types import PoseFrame, PoseSequence

SET = "pose"


def _load():
    inputs = json.loads(fixture_file(SET, "inputs.json").read_text())
    expected = json.loads(fixture_file(SET, "expected", "keypoints.json").read_text())
    ref_hw = reference_size(*inputs["reference"]["image_size_hw"])
    reference = PoseFrame.from_official(inputs["reference"]["pose"], ref_hw)
    driving = PoseSequence.from_official(inputs["driving"]["frames"], tuple(inputs["driving"]["video_size_hw"]))
    return inputs, expected, reference, driving


def _png(kind, i):
    img = cv2.imread(str(fixture_file(SET, "expected", kind, f"{i:04d}.png")), cv2.IMREAD_COLOR)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _assert_pose_close(frame, exp, atol=1e-5):
    got = frame.to_official()
    np.testing.assert_allclose(got["bodies"]["candidate"], np.asarray(exp["bodies"]["candidate"], np.float32), atol=atol, rtol=0)
    np.testing.assert_array_equal(got["bodies"]["subset"] != -1, np.asarray(exp["bodies"]["subset"]) != -1)
    np.testing.assert_allclose(got["hands"], np.asarray(exp["hands"], np.float32), atol=atol, rtol=0)
    np.testing.assert_allclose(got["faces"], np.asarray(exp["faces"], np.float32), atol=atol, rtol=0)


@pytest.mark.fidelity
def test_pose_reference_and_canvas_sizes():
    inputs, expected, reference, _ = _load()
    assert list(reference.image_hw) == expected["ref_resized_hw"]
    aligned = align(reference, _load()[3])
    assert list(aligned.canvas_hw) == expected["canvas_hw"]


@pytest.mark.fidelity
def test_pose_align_scales_offset_and_keypoints():
    _, expected, reference, driving = _load()
    aligned = align(reference, driving)
    for k, v in expected["scales"].items():
        assert aligned.scales.as_dict()[k] == pytest.approx(v, rel=1e-6, abs=0)
    np.testing.assert_allclose(aligned.offset, expected["offset"], atol=1e-7, rtol=0)
    assert len(aligned) == len(expected["positive"])
    for frame, exp in zip(aligned.frames, expected["positive"]):
        _assert_pose_close(frame, exp)


@pytest.mark.fidelity
def test_pose_render_positive_pixel_exact():
    _, expected, reference, driving = _load()
    aligned = align(reference, driving)
    for i, frame in enumerate(aligned.frames):
        got = render(frame, aligned.canvas_hw)
        want = _png("positive", i)
        assert got.shape == want.shape
        assert np.array_equal(got, want), f"positive frame {i}: {(got != want).any(-1).sum()} pixels differ"


@pytest.mark.fidelity
def test_pose_augment_negative_seeded_pixel_exact():
    inputs, expected, reference, driving = _load()
    aligned = align(reference, driving)
    seed = inputs["params"]["aug_seed"]
    for i, (frame, draw) in enumerate(augment(aligned.frames, seed)):
        exp_draw = expected["aug_draws"][i]
        assert (draw.offset_x, draw.offset_y, draw.scale, draw.aspect) == pytest.approx(
            (exp_draw["offset_x"], exp_draw["offset_y"], exp_draw["scale"], exp_draw["aspect"]), rel=0, abs=1e-15)
        _assert_pose_close(frame, expected["negative"][i])
        got = render(frame, aligned.canvas_hw)
        want = _png("negative", i)
        assert np.array_equal(got, want), f"negative frame {i}: {(got != want).any(-1).sum()} pixels differ"
