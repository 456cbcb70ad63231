"""Alignment, rendering and augmentation: odd cases and robustness (no fixtures needed)."""
import numpy as np
import pytest

import pose
from pose.align import Aligner, compute_scales
from pose.augment import augment, augment_frame
from pose.types import PoseFrame


def _person(image_hw=(1280, 720), shift=(0.0, 0.0), size=1.0, n=1):
    body = np.array([[0.5, 0.2], [0.5, 0.29], [0.4, 0.29], [0.35, 0.4], [0.3, 0.5], [0.6, 0.29], [0.65, 0.4],
                     [0.7, 0.5], [0.45, 0.56], [0.44, 0.75], [0.43, 0.93], [0.55, 0.56], [0.56, 0.75],
                     [0.57, 0.93], [0.48, 0.18], [0.52, 0.18], [0.46, 0.19], [0.54, 0.19]], np.float32)
    body = (body - 0.5) * size + 0.5 + np.array(shift, np.float32)
    hands = np.stack([body[7] + np.linspace(0, 0.03, 42).reshape(21, 2), body[4] - np.linspace(0, 0.03, 42).reshape(21, 2)])
    faces = body[0] + np.linspace(-0.02, 0.02, 136).reshape(68, 2)
    return PoseFrame(np.repeat(body[None], n, 0), np.ones((n, 18), bool), np.repeat(hands[None], n, 0),
                     np.repeat(faces[None], n, 0), image_hw)


def test_pose_align_first_frame_neck_lands_on_reference_neck():
    ref = _person((1008, 576))
    drv = [_person(shift=(0.1 * t, 0.02 * t), size=0.7) for t in range(3)]
    aligned = pose.align(ref, drv)
    assert aligned.canvas_hw == (2016, 1152)
    np.testing.assert_allclose(aligned.frames[0].bodies[0, 1], ref.bodies[0, 1], atol=1e-6)
    # Neck trajectory translated, not scaled (in height units).
    d = (aligned.frames[2].bodies[0, 1] - aligned.frames[0].bodies[0, 1]) * [576 / 1008, 1]
    np.testing.assert_allclose(d, np.array([0.2 * 720 / 1280, 0.04]), atol=1e-6)
    assert list(pose.iter_align(ref, iter(drv)))[2].bodies.tobytes() == aligned.frames[2].bodies.tobytes()


def test_pose_align_degenerate_scales():
    ref = _person((1008, 576))
    first = _person()
    b = first.bodies.copy()
    b[0, 16] = b[0, 14] = b[0, 0]          # coincident face chain in frame 0 -> x/0 = inf
    rb = ref.bodies.copy()
    rb[0, 17] = rb[0, 15] = rb[0, 0]
    b[0, 17] = b[0, 15] = b[0, 0]          # 0/0 = NaN -> 1
    first, ref = first.replace(bodies=b), ref.replace(bodies=rb)
    s = compute_scales(ref, first)
    assert np.isinf(s.scale_face_left) and s.scale_face_right == 1
    out = Aligner(ref, first)(first)
    off = out.bodies[0, 1] - ref.bodies[0, 1]  # ~0 for frame 0
    # inf scale -> NaN -> -1, then translated and normalised like every point (official behaviour).
    expected = (np.float32(-1) + Aligner(ref, first).offset) / [np.float32(576 / 1008), 1]
    np.testing.assert_allclose(out.bodies[0, [14, 16]], np.repeat(expected[None].astype(np.float32), 2, 0), atol=1e-6)
    assert np.isfinite(out.bodies).all() and abs(off).max() < 1e-6
    robust = compute_scales(ref, first, fallback="visible")
    assert np.isfinite(list(robust.as_dict().values())).all()


def test_pose_align_missing_points_restored_and_upper_body_fallback():
    ref = _person((1008, 576))
    vis = ref.body_visible.copy()
    vis[0, 8:14] = False                    # upper-body photo: legs not visible
    rb = ref.bodies.copy()
    rb[0, 9:11, 1] = 0.3                    # hallucinated leg points
    ref = ref.replace(bodies=rb, body_visible=vis)
    drv = _person()
    h = drv.hands.copy()
    h[0, 1, 5:] = -1
    drv = drv.replace(hands=h)
    official = compute_scales(ref, drv)
    robust = compute_scales(ref, drv, fallback="visible")
    assert official.scale_leg_upper != robust.scale_leg_upper
    assert robust.scale_leg_upper == robust.scale_leg_lower
    out = Aligner(ref, drv)(drv)
    # Missing hand points stay off-canvas: (-1 + offset) / ratio.
    assert (out.hands[0, 1, 5:] < 0).all()
    with pytest.raises(ValueError):
        compute_scales(ref, drv, fallback="nope")


def test_pose_align_multi_person_and_empty_frames():
    ref = _person((1008, 576))
    drv = [PoseFrame.empty((1280, 720)), _person(n=2), PoseFrame.empty((1280, 720))]
    aligned = pose.align(ref, drv)
    assert aligned.scale_frame == 1 and [f.num_persons for f in aligned] == [0, 2, 0]
    np.testing.assert_array_equal(aligned.frames[1].bodies[0], aligned.frames[1].bodies[1])
    with pytest.raises(pose.NoPersonError, match="reference photo"):
        Aligner(PoseFrame.empty((1008, 576)), drv[1])
    with pytest.raises(pose.NoPersonError):
        pose.align(ref, [drv[0]])


@pytest.mark.parametrize("canvas_hw", [(2016, 1152), (833, 481), (17, 9)])
def test_pose_render_odd_sizes_and_offcanvas(canvas_hw):
    f = _person((1008, 576))
    b = f.bodies.copy()
    b[0, 10] = (-0.5, 1.7)                   # off-canvas points are harmless
    img = pose.render(f.replace(bodies=b), canvas_hw)
    assert img.shape == (*canvas_hw, 3) and img.dtype == np.uint8
    assert not pose.render(PoseFrame.empty((10, 10)), canvas_hw).any()
    outs = list(pose.render_frames([f, f], canvas_hw, output_hw=(48, 32)))
    assert len(outs) == 2 and outs[0].shape == (48, 32, 3)


def test_pose_render_colours_are_official_display_order():
    f = _person((1008, 576))
    img = pose.render(f, (1008, 576))
    nose = (f.bodies[0, 0] * [576, 1008]).astype(int)
    np.testing.assert_array_equal(img[nose[1], nose[0]], [0, 0, 255])   # joint 0: canvas (255,0,0) -> shown blue
    hand_pt = (f.hands[0, 0, 20] * [576, 1008]).astype(int)
    np.testing.assert_array_equal(img[hand_pt[1], hand_pt[0]], [255, 0, 0])  # hand joints shown red


def test_pose_augment_seeded_and_about_neck():
    frames = [_person((1008, 576)) for _ in range(4)]
    a = [(f.bodies.tobytes(), d) for f, d in augment(frames, seed=7)]
    b = [(f.bodies.tobytes(), d) for f, d in augment(frames, seed=7)]
    c = [d for _, d in augment(frames, seed=8)]
    assert a == b and [d for _, d in a] != c
    for _, d in a:
        assert 0.7 <= d.scale <= 1.3 and 0.6 <= d.aspect <= 1.4
    out = augment_frame(frames[0], 1.2, 0.8)
    np.testing.assert_allclose(out.bodies[0, 1], frames[0].bodies[0, 1], atol=1e-7)
    v0, v1 = frames[0].bodies[0, 0] - frames[0].bodies[0, 1], out.bodies[0, 0] - out.bodies[0, 1]
    np.testing.assert_allclose(v1, v0 * [1.2 * 0.8, 1.2], atol=1e-6)
    assert augment_frame(PoseFrame.empty((8, 8)), 1.1, 1.1).num_persons == 0
    assert len(list(pose.augment_frames(frames, 3))) == 4


def test_pose_official_dict_roundtrip():
    f = _person(n=2)
    g = PoseFrame.from_official(f.to_official(), f.image_hw)
    for name in ("bodies", "body_visible", "hands", "faces"):
        np.testing.assert_array_equal(getattr(f, name), getattr(g, name))
    assert f.to_official()["hands"].shape == (4, 21, 2)
    with pytest.raises(ValueError):
        PoseFrame(np.zeros((1, 17, 2)), np.zeros((1, 17), bool), np.zeros((1, 2, 21, 2)), np.zeros((1, 68, 2)), (4, 4))


@pytest.mark.parametrize("canvas_hw,out_hw", [((2016, 1152), (832, 480)), ((2016, 1152), (1008, 576)), ((1000, 700), (999, 699))])
def test_pose_render_resized_region_equals_full_resize(canvas_hw, out_hw):
    import cv2

    for size, shift in ((1.0, 0.0), (0.4, 0.3), (1.6, -0.2)):
        f = _person((1008, 576), shift=(shift, 0.0), size=size)
        full = cv2.resize(pose.render(f, canvas_hw), (out_hw[1], out_hw[0]), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(pose.render(f, canvas_hw, output_hw=out_hw), full)


@pytest.mark.parametrize("output_hw", [None, (252, 144)])
def test_pose_sources_slices_equal_the_full_render(output_hw):
    ref = _person((252, 144))
    drv = [_person(shift=(0.02 * t, 0.01 * t), size=0.8 + 0.02 * t) for t in range(7)]
    aligned = pose.align(ref, drv)
    positive, negative = pose.pose_sources(aligned, 11, output_hw=output_hw)
    full_pos = np.stack(list(pose.render_frames(aligned.frames, aligned.canvas_hw, output_hw=output_hw)))
    full_neg = np.stack(list(pose.render_frames(pose.augment_frames(aligned.frames, 11), aligned.canvas_hw,
                                                output_hw=output_hw)))
    assert len(positive) == len(negative) == 7 and positive.frame_hw == full_pos.shape[1:3]
    assert np.array_equal(positive.frames(0, 7), full_pos) and np.array_equal(negative.frames(0, 7), full_neg)
    for start, stop in ((3, 6), (5, 7), (0, 1), (6, 9)):       # any slice, in any order, read again
        assert np.array_equal(negative.frames(start, stop), full_neg[start:stop])
        assert np.array_equal(positive.frames(start, stop), full_pos[start:stop])
    assert not np.array_equal(full_pos, full_neg)
    assert negative.frames(7, 9).shape == (0, *positive.frame_hw, 3)
