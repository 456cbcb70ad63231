"""Each quality measure against an independent numpy computation on a small input."""
import math

import numpy as np
import pytest
import torch

from steadydancer_core.quality import colour, first_frame, identity, pose_following, regions, smoothness
from steadydancer_core.quality.keypoints import Person, person
from steadydancer_core.quality.start_gap import start_gap
from steadydancer_core.quality.thresholds import VERDICT_LIMITS, Limit, QualitySettings

from quality_support import dancer


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_psnr_and_max_abs_match_numpy():
    a, b = _rng().random((5, 7, 3)), _rng(1).random((5, 7, 3))
    mse = sum((x - y) ** 2 for x, y in zip(a.ravel(), b.ravel())) / a.size
    assert first_frame.psnr(a, b) == pytest.approx(10 * math.log10(1 / mse), rel=1e-12)
    assert first_frame.max_abs(a, b) == pytest.approx(max(abs(x - y) for x, y in zip(a.ravel(), b.ravel())) * 255)
    assert first_frame.psnr(a, a) == math.inf


def test_photo_at_is_the_samplers_resize():
    from steadydancer_core.sampling.conditioning import photo_at as _photo_at   # what generate() uses

    photo = _rng().random((40, 24, 3)).astype(np.float32)
    ours = first_frame.photo_at(photo, (32, 20))
    theirs = _photo_at(torch.from_numpy(photo), (32, 20)).numpy()
    np.testing.assert_array_equal(ours, theirs)
    assert first_frame.photo_at(photo, (40, 24)) is photo


def _person(body, ok=None, hands=None, face=None):
    body = np.asarray(body, np.float64)
    ok = np.ones(len(body), bool) if ok is None else np.asarray(ok)
    hands = np.full((42, 2), -1.0) if hands is None else np.asarray(hands, np.float64)
    face = np.full((68, 2), -1.0) if face is None else np.asarray(face, np.float64)
    return Person(body, ok, hands, (hands >= 0).all(-1), face, (face >= 0).all(-1))


def test_pck_and_oks_match_loops():
    rng = _rng(2)
    ref = rng.random((18, 2)) * 100
    gen = ref + rng.normal(0, 6, (18, 2))
    ref_ok, gen_ok = rng.random(18) > 0.2, rng.random(18) > 0.1
    threshold = 7.5
    hits = [gen_ok[i] and np.hypot(*(gen[i] - ref[i])) <= threshold for i in range(18) if ref_ok[i]]
    assert pose_following.pck(gen, gen_ok, ref, ref_ok, threshold) == pytest.approx(sum(hits) / len(hits))
    pts = ref[ref_ok]
    area = (pts[:, 0].max() - pts[:, 0].min()) * (pts[:, 1].max() - pts[:, 1].min())
    terms = []
    for i in range(18):
        if ref_ok[i]:
            d2 = (gen[i, 0] - ref[i, 0]) ** 2 + (gen[i, 1] - ref[i, 1]) ** 2
            k = 2 * pose_following.BODY_SIGMAS[i]
            terms.append(math.exp(-d2 / (2 * area * k * k)) if gen_ok[i] else 0.0)
    p_ref = _person(ref, ref_ok)
    assert pose_following.body_area(p_ref) == pytest.approx(area)
    assert pose_following.oks(gen, gen_ok, ref, ref_ok, area) == pytest.approx(np.mean(terms))
    assert math.isnan(pose_following.pck(gen, gen_ok, ref, np.zeros(18, bool), 1.0))


def test_frame_following_parts_and_lost():
    rng = _rng(3)
    body = rng.random((18, 2)) * 100
    hands = rng.random((42, 2)) * 100
    face = rng.random((68, 2)) * 100
    ref = _person(body, hands=hands, face=face)
    size = float((body.max(0) - body.min(0)).max())
    moved_hands = hands + np.array([0.04 * size, 0])            # within 0.05 x size
    moved_face = face.copy()
    moved_face[:34] += np.array([0, 0.06 * size])                # half the face beyond 0.05 x size
    gen = _person(body, hands=moved_hands, face=moved_face)
    out = pose_following.frame_following(gen, ref, 0.1, 0.05, 0.05)
    assert out["pose_pck_body"] == 1 and out["pose_pck_hands"] == 1 and out["pose_pck_face"] == 0.5
    assert out["pose_oks"] == pytest.approx(1.0) and out["pose_lost"] == 0
    lost = pose_following.frame_following(None, ref, 0.1, 0.05, 0.05)
    assert lost["pose_lost"] == 1 and lost["pose_pck_body"] == 0 and lost["pose_oks"] == 0
    assert all(math.isnan(v) for v in pose_following.frame_following(gen, None, 0.1, 0.05, 0.05).values())


def test_jerk_matches_third_difference():
    rng = _rng(4)
    track = rng.random((6, 18, 2)) * 50
    ok = np.ones((6, 18), bool)
    ok[4, 3] = False
    tracker = pose_following.JerkTracker()
    got = []
    for t in range(6):
        p = _person(track[t], ok[t])
        got.append(tracker.update(p, p))
    size = lambda t: float((track[t][ok[t]].max(0) - track[t][ok[t]].min(0)).max())  # noqa: E731
    for t in range(3, 6):
        both = ok[t - 3:t + 1].all(0)
        third = track[t] - 3 * track[t - 1] + 3 * track[t - 2] - track[t - 3]
        expected = np.mean([np.hypot(*third[i]) for i in range(18) if both[i]]) / size(t)
        assert got[t][0] == pytest.approx(expected) and got[t][1] == pytest.approx(expected)
    assert all(math.isnan(g[0]) for g in got[:3])


def test_cosine_matches_numpy():
    a, b = _rng(5).normal(size=12), _rng(6).normal(size=12)
    assert identity.cosine(a, b) == pytest.approx(np.dot(a, b) / math.sqrt(np.dot(a, a) * np.dot(b, b)))
    assert math.isnan(identity.cosine(None, b)) and math.isnan(identity.cosine(np.zeros(3), np.ones(3)))


def test_clip_embedder_is_the_class_token_of_the_encoder():
    from steadydancer_core import CLIPVisionConfig, ImageEncoder
    from steadydancer_core.models.image_encoder import CLIPVisionTower

    torch.manual_seed(0)
    config = CLIPVisionConfig.tiny(dim=16, num_layers=2, num_heads=1, mlp_dim=16)
    encoder = ImageEncoder(CLIPVisionTower(config).eval())
    images = [_rng(7).random((30, 20, 3)).astype(np.float32), _rng(8).random((12, 12, 3)).astype(np.float32)]
    got = identity.clip_embedder(encoder)(images)
    for image, vector in zip(images, got):
        x = torch.from_numpy(image).permute(2, 0, 1)[None] * 2 - 1
        x = torch.nn.functional.interpolate(x, size=(config.image_size,) * 2, mode="bicubic", align_corners=False)
        np.testing.assert_allclose(vector, encoder.encode(x)[0, 0].numpy(), rtol=1e-5, atol=1e-6)
    assert identity.embed_many(lambda ims: np.ones((len(ims), 3)), [None, images[0]])[0] is None


def test_background_change_matches_loop():
    a, b = _rng(9).random((6, 5, 3)), _rng(10).random((6, 5, 3))
    mask = _rng(11).random((6, 5)) > 0.4
    values = [abs(b[y, x, c] - a[y, x, c]) for y in range(6) for x in range(5) for c in range(3) if mask[y, x]]
    assert smoothness.background_change(a, b, mask) == pytest.approx(np.mean(values) * 255, rel=1e-6)
    assert math.isnan(smoothness.background_change(a, b, np.zeros((6, 5), bool)))


def test_glitch_frames():
    change = [math.nan, 1, 1.2, 0.9, 40, 38, 1.1, 1, 30, 1, 1, 25]
    # frame 4 jumps in and out; 8 jumps in and does not come back (a cut, not a glitch); 11 is the last frame
    assert smoothness.glitch_frames(change, 4.0, 8.0) == [4, 11]
    assert smoothness.glitch_frames([math.nan], 4.0, 8.0) == []


def _lab_of_mean_light(pixels):
    """Textbook sRGB (D65) -> CIE L*a*b* of the mean linear light of 8-bit pixels, one scalar at a time."""
    def linear(v):
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

    mean = [sum(linear(p[c]) for p in pixels) / len(pixels) for c in range(3)]
    m = [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
    white = [sum(row) for row in m]
    xyz = [sum(m[i][c] * mean[c] for c in range(3)) / white[i] for i in range(3)]
    f = [v ** (1 / 3) if v > (6 / 29) ** 3 else v / (3 * (6 / 29) ** 2) + 4 / 29 for v in xyz]
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_colour_shift_and_delta_e_match_textbook_formulas():
    a = _rng(12).integers(0, 256, (8, 6, 3)) / 255.0
    b = _rng(13).integers(0, 256, (8, 6, 3)) / 255.0
    m1, m0 = _rng(14).random((8, 6)) > 0.5, _rng(15).random((8, 6)) > 0.5
    expected = _lab_of_mean_light(a[m1]) - _lab_of_mean_light(b[m0])
    shift = colour.region_shift(colour.linear_rgb(a), colour.linear_rgb(b), m1, m0)
    np.testing.assert_allclose(shift, expected, atol=1e-4)
    assert colour.delta_e(shift) == pytest.approx(math.sqrt(sum(expected ** 2)), abs=1e-4)
    white = colour.lab_of_linear(np.ones(3))
    np.testing.assert_allclose(white, [100, 0, 0], atol=1e-9)
    assert np.isnan(colour.region_shift(a, b, np.zeros((8, 6), bool), m0)).all()


def test_drift_onset():
    assert colour.drift_onset([0, 1, 4, 0, 5, 5, 5, 6], 3.0, 3) == 4
    assert colour.drift_onset([0, 4, 4, math.nan, 4], 3.0, 3) is None


def test_regions():
    p = _person([[10, 20], [30, 60]] + [[20, 40]] * 16)
    box = regions.person_box(p, (100, 80), margin=0.1)
    assert box == (16, 65, 6, 35)                      # grow by 0.1 x size 40 = 4 px; end-exclusive
    mask = regions.background_mask([p], (100, 80), 0.1)
    expected = np.ones((100, 80), bool)
    expected[16:65, 6:35] = False
    np.testing.assert_array_equal(mask, expected)
    body = regions.person_mask(person(dancer(0), (160, 96)), (160, 96))
    assert body[int(0.29 * 160), int(0.5 * 96 + 0.15 * math.sin(0) * 96)] and not body[0, 0] and body.mean() < 0.3
    face = np.stack([np.linspace(40, 50, 68), np.linspace(10, 30, 68)], 1)
    fb = regions.face_box(_person([[0, 0]] * 18, face=face), (100, 100), margin=0.25)
    assert fb == (5, 35, 30, 60)                       # square side 20 * 1.5 = 30 around (45, 20)
    assert regions.face_box(None, (10, 10), 0.25) is None


def test_start_gap_matches_numpy():
    photo = dancer(0, image_hw=(200, 100))
    first = dancer(2, image_hw=(400, 200))             # another canvas of the same aspect
    gap = start_gap(photo, first)
    a = photo.bodies[0].astype(np.float64) * [100, 200]
    b = first.bodies[0].astype(np.float64) * [100, 200]
    size = float((a.max(0) - a.min(0)).max())
    assert gap.gap == pytest.approx(np.mean(np.hypot(*(a - b).T)) / size)
    assert gap.verdict == VERDICT_LIMITS["start_gap"].judge(gap.gap) and gap.farthest
    same = start_gap(photo, dancer(0, image_hw=(400, 200)))
    assert same.gap == pytest.approx(0, abs=1e-6) and same.verdict == "good" and "matches" in same.message
    assert "cut the driving video" in gap.message or gap.verdict == "good"


def test_settings_and_limits_are_validated():
    with pytest.raises(ValueError, match="followed_pck"):
        QualitySettings(followed_pck=1.5)
    with pytest.raises(ValueError, match="chunk_frames"):
        QualitySettings(chunk_frames=0)
    with pytest.raises(ValueError, match="better side"):
        Limit("x", 0.5, 0.9, True, "")
    limit = Limit("x", 0.9, 0.7, True, "")
    assert [limit.judge(v) for v in (0.95, 0.8, 0.1, math.nan, None)] == ["good", "check", "bad", "n/a", "n/a"]


def test_importing_the_core_loads_no_matplotlib_and_the_measures_take_poses_as_input():
    import ast
    import subprocess
    import sys

    from conftest import REPO_ROOT

    code = ("import sys, steadydancer_core, steadydancer_core.quality.plot, steadydancer_core.quality.compare\n"
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported at import time'\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)
    for path in sorted((REPO_ROOT / "steadydancer_core" / "quality").glob("*.py")):   # keypoints come in as data
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "pose" or n.endswith("pose_package") for n in names), path.name
