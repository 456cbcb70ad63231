"""Pose extraction with tiny ONNX models that carry the real signatures (real pre/post-processing runs)."""

import numpy as np
import pytest

import pose
import pose.detector
import pose.estimator
from pose import onnx_runtime
from pose.estimator import FLIP_INDICES, box_center_scale
from pose.tiny_models import build_tiny_dwpose, build_tiny_yolox, canonical_pose
from pose.wholebody import WholeBody, build_frame, detection_size, iter_extract, to_openpose

pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    return {
        "det": build_tiny_yolox(d / "yolox_l.onnx", boxes=[(320, 320, 200, 400, 0.9)]),
        "det2": build_tiny_yolox(d / "yolox_two.onnx", boxes=[(320, 200, 160, 300, 0.9), (120, 170, 200, 320, 0.7)]),
        "det1": build_tiny_yolox(d / "yolox_fixed_fp16.onnx", boxes=[(320, 320, 200, 400, 0.9)], dynamic_batch=False, fp16=True),
        "est": build_tiny_dwpose(d / "dw-ll_ucoco_384.onnx"),
        "est1": build_tiny_dwpose(d / "dw_fixed_fp16.onnx", dynamic_batch=False, fp16=True, input_name="x",
                                  output_names=("out_a", "out_b")),
        "est_low": build_tiny_dwpose(d / "dw_low.onnx", low_keypoints=[9, 10, 91 + 20, 112 + 20]),
    }


def _frame(h=481, w=833, patches=((0.42, 0.5),)):
    img = np.full((h, w, 3), 60, np.uint8)
    for fy, fx in patches:
        y, x = int(fy * h), int(fx * w)
        img[y - 10:y + 10, x - 10:x + 10] = 255
    return img


def test_pose_extract_geometry_matches_box_mapping(models):
    model = WholeBody.load(models["det"], models["est"])
    img = _frame()
    (frame,) = model([img])
    assert frame.num_persons == 1 and frame.image_hw == (481, 833)
    assert frame.body_visible.all() and (frame.hands > 0).all() and (frame.faces > 0).all()
    # Expected nose position from the box -> crop mapping, independently computed.
    rh, rw = detection_size(481, 833)
    f = min(640 / rh, 640 / rw)
    box = np.array([220, 120, 420, 520]) / f
    c, s = box_center_scale(box, 288 / 384)
    bx, by = canonical_pose()
    nose = np.array([bx[0], by[0]]) / 2.0 / np.array([288, 384]) * s + c - s / 2
    np.testing.assert_allclose(frame.bodies[0, 0], nose / [rw, rh], atol=2e-3)
    # Neck is the mean of the shoulders (OpenPose 2 and 5).
    np.testing.assert_allclose(frame.bodies[0, 1], frame.bodies[0, [2, 5]].mean(0), atol=1e-6)


def test_pose_variants_fixed_batch_fp16_renamed(models):
    a = WholeBody.load(models["det"], models["est"])
    b = WholeBody.load(models["det1"], models["est1"], batch_size=4)
    frames = [_frame(), _frame(), _frame(300, 200, ((0.4, 0.5),))]
    fa, fb = a(frames), b(frames)
    for x, y in zip(fa, fb):
        np.testing.assert_allclose(x.bodies, y.bodies, atol=5e-3)
        np.testing.assert_array_equal(x.body_visible, y.body_visible)


def test_pose_unnamed_outputs_in_y_x_order(models, tmp_path):
    swapped = build_tiny_dwpose(tmp_path / "dw_swapped.onnx", output_names=("simcc_y", "simcc_x"))
    est = pose.estimator.WholeBodyEstimator(swapped)
    est._order = (1, 0)  # as if the names were unknown and the order (y, x)
    a = WholeBody.load(models["det"], models["est"])([_frame()])[0]
    b = WholeBody(a_det := pose.detector.PersonDetector(models["det"]), est)([_frame()])[0]
    np.testing.assert_array_equal(a.bodies, b.bodies)
    assert a_det.input_hw == (640, 640)


def test_pose_person_modes(models):
    img = _frame(patches=((0.42, 0.5), (0.42, 0.2)))
    frames = {p: WholeBody.load(models["det2"], models["est"], person=p)([img])[0] for p in pose.PERSON_MODES}
    assert frames["all"].num_persons == 2
    assert frames["all"].scores[0] > frames["all"].scores[1]
    assert frames["highest"].num_persons == 1 and frames["highest"].scores[0] == pytest.approx(0.9, abs=1e-4)
    assert frames["largest"].num_persons == 1 and frames["largest"].scores[0] == pytest.approx(0.7, abs=1e-4)
    canvas = pose.render(frames["all"], (481, 833))
    assert canvas.any()


def test_pose_missing_frames_hold_and_empty(models):
    dark = np.full((481, 833, 3), 60, np.uint8)
    frames = [dark, _frame(), dark, _frame(), dark]
    held = pose.extract(iter(frames), models["det"], models["est"], batch_size=2, no_person="hold")
    assert held.missing_frames == (0, 2, 4) and held.filled_frames == (0, 2, 4)
    assert all(f.num_persons == 1 for f in held)
    empty = pose.extract(iter(frames), models["det"], models["est"], batch_size=2, no_person="empty")
    assert [f.num_persons for f in empty] == [0, 1, 0, 1, 0]
    aligned = pose.align(held[1], empty)
    assert aligned.scale_frame == 1
    imgs = list(pose.render_frames(aligned.frames, aligned.canvas_hw))
    assert not imgs[0].any() and imgs[1].any()
    with pytest.raises(pose.NoPersonError):
        pose.extract([dark, dark], models["det"], models["est"])


def test_pose_reference_without_person_names_the_fix(models):
    with pytest.raises(pose.NoPersonError, match="reference photo"):
        pose.extract_reference(np.zeros((400, 300, 3), np.uint8), models["det"], models["est"])
    ref, resized = pose.extract_reference(_frame(700, 500), models["det"], models["est"])
    assert resized.shape[:2] == pose.reference_size(700, 500) == ref.image_hw


def test_pose_thresholds_low_score_points(models):
    model = WholeBody.load(models["det"], models["est_low"], flip_test=True)
    (frame,) = model([_frame()])
    # COCO 9/10 (wrists) -> OpenPose 7/4: invisible but coordinates kept.
    assert not frame.body_visible[0, 4] and not frame.body_visible[0, 7]
    assert (frame.bodies[0, [4, 7]] > 0).all()
    assert (frame.hands[0, :, 20] == -1).all() and (frame.hands[0, :, :20] > 0).all()


def test_pose_streaming_is_lazy(models):
    model = WholeBody.load(models["det"], models["est"])
    produced = []

    def gen():
        for i in range(100):
            produced.append(i)
            yield _frame(120, 96)

    it = iter_extract(gen(), model, batch_size=4)
    next(it)
    assert len(produced) == 4


def test_pose_openpose_order_and_neck():
    kp = np.random.default_rng(0).random((1, 133, 2)).astype(np.float32)
    sc = np.full((1, 133), 0.9, np.float32)
    sc[0, 5] = 0.2
    op_kp, op_sc = to_openpose(kp, sc)
    np.testing.assert_allclose(op_kp[0, 1], kp[0, [5, 6]].mean(0))
    assert op_sc[0, 1] == 0  # one shoulder <= 0.3
    for op, coco in {0: 0, 2: 6, 3: 8, 4: 10, 5: 5, 6: 7, 7: 9, 8: 12, 9: 14, 10: 16, 11: 11, 12: 13,
                     13: 15, 14: 2, 15: 1, 16: 4, 17: 3}.items():
        np.testing.assert_array_equal(op_kp[0, op], kp[0, coco])
    frame = build_frame(kp * 100, sc, np.ones(1, np.float32), (100, 100), (50, 50))
    assert not frame.body_visible[0, 1] and not frame.body_visible[0, 5]


def test_pose_flip_indices_involution():
    assert (FLIP_INDICES[FLIP_INDICES] == np.arange(133)).all()
    assert FLIP_INDICES[5] == 6 and FLIP_INDICES[91] == 112 and FLIP_INDICES[23] == 39 and FLIP_INDICES[23 + 8] == 31


def test_pose_bad_model_file_errors(tmp_path):
    bad = tmp_path / "yolox_l.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(onnx_runtime.OnnxModelError, match="download it again"):
        onnx_runtime.get_session(bad, ["CPUExecutionProvider"])
    with pytest.raises(onnx_runtime.OnnxModelError, match="not found"):
        onnx_runtime.get_session(tmp_path / "missing.onnx", ["CPUExecutionProvider"])


def test_pose_sessions_are_shared_while_used_and_freed_when_dropped(models):
    import weakref

    first = onnx_runtime.get_session(models["det"], ["CPUExecutionProvider"])
    assert onnx_runtime.get_session(models["det"], ["CPUExecutionProvider"]) is first
    ref = weakref.ref(first)
    del first
    assert ref() is None, "no module-level reference keeps a session (and its memory) alive"
