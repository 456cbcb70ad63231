"""The quality report on videos whose answer is known: rendered along the driving poses (followed), shuffled or
mirrored (not followed), a colour drift from a given frame, a frame of noise, frame 0 not the photo; streaming,
cancelling, files, pictures and comparisons."""
import json
import math

import cv2
import numpy as np
import pytest

import steadydancer_core as sd
from steadydancer_core.quality.first_frame import photo_at

from quality_support import HW, dancer, read_skeleton, skeleton_video, small_embed, textured_background

T = 24


@pytest.fixture(scope="module")
def scene():
    poses = [dancer(t) for t in range(T)]
    video = skeleton_video(poses, background=textured_background())
    return poses, video


def _report(photo, video, poses, **kw):
    kw.setdefault("clip", small_embed)
    kw.setdefault("pose_extractor", read_skeleton)
    return sd.quality_report(photo, video, poses, **kw)


def test_skeleton_rendered_along_the_driving_poses_follows_them(scene):
    poses, video = scene
    r = _report(video[0], video, poses)
    assert r.summary["pose_followed_fraction"] == 1.0
    assert r.summary["pose_pck_body_mean"] > 0.97 and r.summary["pose_oks_mean"] > 0.95
    assert r.summary["pose_lost_count"] == 0 and "lost" not in r.flagged
    assert r.verdicts["pose"] == "good" and r.verdicts["first_frame"] == "good"
    assert r.summary["jerk_ratio"] == pytest.approx(1.0, abs=0.2)
    assert math.isinf(r.summary["first_frame_psnr"]) and r.summary["first_frame_max_abs"] == 0
    assert r.flagged.get("glitch", []) == [] and r.summary["colour_drift_frame"] is None


def _shift(image, dx, dy):
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, m, (image.shape[1], image.shape[0]), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_REPLICATE)


def test_photo_warped_along_the_driving_poses_follows_them_and_keeps_identity():
    base = dancer(0)
    photo = skeleton_video([base], background=textured_background())[0]
    moves = [(int(round(10 * math.sin(1.3 * t))), int(round(6 * math.cos(0.9 * t)))) for t in range(T)]
    moves[0] = (0, 0)
    video = np.stack([_shift(photo, dx, dy) for dx, dy in moves])
    poses = [base.replace(bodies=base.bodies + np.float32([dx / HW[1], dy / HW[0]])) for dx, dy in moves]
    r = _report(photo, video, poses)
    assert r.summary["pose_followed_fraction"] == 1.0 and r.summary["pose_pck_body_mean"] > 0.97
    assert r.summary["identity_photo_min"] > 0.8 and r.summary["face_identity_photo_min"] > 0.8
    assert r.verdicts["first_frame"] == "good"


def test_shuffled_or_mirrored_frames_do_not_follow(scene):
    poses, video = scene
    good = _report(video[0], video, poses)
    order = np.random.default_rng(0).permutation(T)
    shuffled = _report(video[0], video[order], poses)
    mirrored = _report(video[0], video[:, :, ::-1], poses)
    assert shuffled.summary["pose_pck_body_mean"] < 0.6 < good.summary["pose_pck_body_mean"]
    assert shuffled.summary["pose_followed_fraction"] <= 0.5 and shuffled.verdicts["pose"] == "bad"
    assert mirrored.summary["pose_followed_fraction"] < 0.2 and mirrored.verdicts["pose"] == "bad"
    assert shuffled.summary["jerk_ratio"] > good.summary["jerk_ratio"]


@pytest.mark.parametrize("k", [7, 15])
def test_colour_drift_is_found_at_the_frame_it_starts(scene, k):
    poses, video = scene
    drifted = video.astype(np.int16)
    drifted[k:, ..., 0] += 20                                    # redder from frame k on
    drifted[k:, ..., 2] -= 6
    drifted = np.clip(drifted, 0, 255).astype(np.uint8)
    r = _report(drifted[0], drifted, poses)
    assert r.summary["colour_drift_frame"] == k
    assert r.summary["colour_shift"] == "redder" and r.verdicts["colour"] in ("check", "bad")
    assert f"from frame {k}" in r.summary_line()
    assert max(r.series["colour_bg_de"][:k]) < 0.5 < min(r.series["colour_bg_de"][k:])


def test_a_frame_of_noise_is_flagged(scene):
    poses, video = scene
    noisy = video.copy()
    noisy[11] = np.random.default_rng(1).integers(0, 256, noisy[11].shape, dtype=np.uint8)
    r = _report(noisy[0], noisy, poses)
    assert r.flagged["glitch"] == [11] and r.verdicts["glitches"] == "check"
    assert "1 glitch frame (11)" in r.summary_line()
    assert r.summary["identity_prev_min_frame"] in (11, 12)
    assert r.worst["glitch"][0][0] == 11 and 11 in r.thumbnails
    assert r.summary["colour_drift_frame"] is None              # one odd frame is not a drift


def test_frame_zero_not_the_photo_is_flagged(scene):
    poses, video = scene
    other = textured_background(seed=3)[::-1].copy()
    r = _report(other, video, poses)
    assert r.flagged["first_frame"] == [0] and r.verdicts["first_frame"] == "bad"
    assert r.summary_line().startswith("FIRST FRAME IS NOT THE PHOTO")
    big = cv2.resize(video[0], (HW[1] * 2, HW[0] * 2), interpolation=cv2.INTER_CUBIC)
    exact = video.copy()
    exact[0] = np.round(photo_at(big.astype(np.float32) / 255, HW) * 255).astype(np.uint8)
    r = _report(big, exact, poses)                               # the photo at another size: resized first
    assert r.verdicts["first_frame"] == "good" and r.summary["first_frame_psnr"] > 50


def test_json_round_trip_and_words(scene):
    poses, video = scene
    r = _report(video[0], video, poses, segments=[(0, 13, 1), (8, 13, 5), (16, 8, 5)], label="cache off", fps=24)
    assert r.segments == (8, 16)
    data = json.loads(r.to_json())
    assert data["summary_line"] == r.summary_line() and data["label"] == "cache off"
    assert data["summary"]["first_frame_psnr"] == "inf" and data["series"]["identity_prev"][0] is None
    back = sd.QualityReport.from_json(r.to_json())
    assert back.summary_line() == r.summary_line() and back.segments == (8, 16) and back.verdicts == r.verdicts
    np.testing.assert_allclose(back.series["pose_oks"], r.series["pose_oks"], atol=1e-6)
    assert back.thumbnails == {}
    with pytest.raises(ValueError, match="not a SteadyDancer quality report"):
        sd.QualityReport.from_json("{}")


def test_streams_a_chunk_at_a_time_reports_progress_and_cancels(scene):
    poses, video = scene
    produced, seen = [0], []

    def frames():
        for f in video:
            produced[0] += 1
            yield f

    settings = sd.QualitySettings(chunk_frames=4)
    sd.quality_report(video[0], frames(), poses, settings=settings,
                      progress=lambda done, total: seen.append((done, produced[0], total)))
    assert [s[0] for s in seen] == list(range(4, T + 1, 4))
    assert all(p - d <= 4 and t is None for d, p, t in seen)
    calls = [0]

    def cancel():
        calls[0] += 1
        return calls[0] > 2

    with pytest.raises(sd.Cancelled, match="after 8 frames"):
        sd.quality_report(video[0], video, poses, settings=settings, should_cancel=cancel)


def test_video_file_files_beside_it_and_no_overwrite(scene, tmp_path):
    poses, video = scene
    path = sd.write_video(tmp_path / "dance.mp4", video, fps=24, crf=0)
    r = sd.quality_report(video[0], path, poses, clip=small_embed)
    assert r.num_frames == T and r.fps == pytest.approx(24) and tuple(r.frame_hw) == HW
    # H.264 keeps half the colour resolution: a skeleton's saturated edges lose more than a photo would
    assert 20 < r.summary["first_frame_psnr"] < 60 and r.verdicts["pose"] == "n/a"
    json_path, png_path = sd.write_report(r, path)
    assert json_path.name == "dance.quality.json" and png_path.name == "dance.quality.png"
    assert sd.QualityReport.from_json(json_path.read_text()).num_frames == T
    assert cv2.imread(str(png_path)).shape[1] == 1600
    with pytest.raises(FileExistsError, match="dance.quality.json"):
        sd.write_report(r, path)
    sd.write_report(r, path, overwrite=True)


def test_without_models_measures_what_it_can(scene):
    _, video = scene
    r = sd.quality_report(video[0], video)
    assert r.verdicts["pose"] == r.verdicts["identity"] == "n/a" and r.verdicts["glitches"] == "good"
    assert any("pose following" in n for n in r.notes) and any("identity" in n for n in r.notes)
    assert "first frame = photo" in r.summary_line() and "colour steady" in r.summary_line()
    with pytest.raises(ValueError, match="no frames"):
        sd.quality_report(video[0], iter(()))
    with pytest.raises(ValueError, match="frame size changed"):
        sd.quality_report(video[0], [video[:4], video[:4, :80]])


def test_plot_and_comparison(scene):
    poses, video = scene
    a = _report(video[0], video, poses, label="40 steps", segments=[12])
    noisy = video.copy()
    noisy[5] = 255 - noisy[5]
    b = _report(video[0], noisy, poses, label="4-step LoRA")
    image = a.plot()
    assert image.dtype == np.uint8 and image.shape[1] == 1600 and image.shape[2] == 3 and image.std() > 10
    cmp = sd.compare_reports([a, b.to_json()])
    assert cmp.labels == ["40 steps", "4-step LoRA"]
    lines = cmp.table.splitlines()
    assert lines[0].startswith("| run | frames |") and "pose followed" in lines[0] and len(lines) == 4
    assert lines[3].startswith("| 4-step LoRA | 24 |") and "1 (check)" in lines[3]
    picture = cmp.plot()
    assert picture.shape[1] == 1600 and picture.dtype == np.uint8
    with pytest.raises(ValueError, match="one label per report"):
        sd.compare_reports([a, b], labels=["x"])


def test_start_gap_in_the_report_and_the_tiny_dwpose_extractor(tmp_path, scene):
    import pose
    from pose.tiny_models import build_tiny_dwpose, build_tiny_yolox

    poses, video = scene
    model = pose.load_models(build_tiny_yolox(tmp_path / "det.onnx"), build_tiny_dwpose(tmp_path / "est.onnx"),
                             providers=pose.CPU_ONLY)
    r = sd.quality_report(video[0], video[:6], iter(poses[:6]), pose_extractor=model, photo_pose=dancer(3))
    assert r.start_gap is not None and r.summary["start_gap"] == pytest.approx(r.start_gap["start_gap"])
    assert r.summary["start_gap"] > 0 and len(r.series["pose_pck_body"]) == 6
    gap = sd.start_gap(dancer(0), poses[0])
    assert gap.verdict == "good" and gap.gap == pytest.approx(0, abs=1e-6)


def test_identity_every_embeds_a_frame_in_n(scene):
    poses, video = scene
    calls = []

    def embed(images):
        calls.append(len(images))
        return small_embed(images)

    r = sd.quality_report(video[0], video, poses, clip=embed, pose_extractor=read_skeleton,
                          settings=sd.QualitySettings(identity_every=5, chunk_frames=8))
    measured = [i for i, v in enumerate(r.series["identity_photo"]) if not math.isnan(v)]
    assert measured == list(range(0, T, 5)) and sum(calls) == 2 + 2 * len(measured)
    assert not math.isnan(r.series["identity_prev"][5])         # against frame 0, the last one embedded


def test_compare_command(scene, tmp_path, capsys):
    from steadydancer_core.quality.__main__ import main

    poses, video = scene
    for name in ("a", "b"):
        (tmp_path / f"{name}.quality.json").write_text(_report(video[0], video[:8], poses[:8]).to_json())
    files = [str(tmp_path / "a.quality.json"), str(tmp_path / "b.quality.json")]
    assert main(files + ["--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "| a | 8 |" in out and "| b | 8 |" in out
    assert (tmp_path / "cmp.md").read_text().startswith("| run |") and (tmp_path / "cmp.png").stat().st_size > 0
    assert main(files + ["--out", str(tmp_path / "cmp")]) == 2            # never over existing files
    assert main([str(tmp_path / "missing.json")]) == 2
    assert "error" in capsys.readouterr().err
