"""Hostile and unusual driving videos: pose frames decoded small and one at a time, turned upright, picked by
timestamp; absurd frame rates refused in one line."""
from fractions import Fraction

import numpy as np
import pytest

from steadydancer_core import video_io


def _encode(path, frames, rate=24, stamps=None, time_base=None, rotation=None):
    """Write uint8 [H, W, 3] frames as H.264; ``stamps``: their pts in ``time_base`` units (variable rate)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "10"}
        if time_base is not None:
            stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if stamps is not None:
                frame.pts, frame.time_base = stamps[i], time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _levels(count, shape=(32, 32)):
    """Frames whose brightness is 30 * their index, to tell them apart after encoding."""
    return [np.full((*shape, 3), 30 * i, np.uint8) for i in range(count)]


def _index(frame) -> int:
    return int(round(float(frame.mean()) / 30))


@pytest.mark.parametrize("rate", [1e6, 241, 1e-9, 0.0, float("nan"), float("inf"), -24])
def test_absurd_frame_rates_are_refused_in_one_line(tmp_path, rate):
    path = video_io.write_video(tmp_path / "clip.mp4", np.zeros((3, 16, 16, 3), np.uint8), 24)
    for read in (video_io.iter_pose_frames, lambda p, target_fps: video_io.iter_video_frames(p, target_fps=target_fps)):
        with pytest.raises(ValueError, match="target_fps must be a frame rate from 0.01 to 240") as info:
            next(iter(read(path, target_fps=rate)))
        assert "\n" not in str(info.value)
    with pytest.raises(video_io.VideoWriteError, match="fps must be a frame rate from 0.01 to 240"):
        video_io.write_video(tmp_path / "out.mp4", np.zeros((1, 16, 16, 3), np.uint8), rate)
    assert not (tmp_path / "out.mp4").exists()


def test_the_fps_range_ends_play(tmp_path):
    for rate in video_io.FPS_RANGE:
        path = video_io.write_video(tmp_path / f"{rate}.mp4", np.zeros((2, 16, 16, 3), np.uint8), rate)
        assert video_io.probe_video(path).fps == pytest.approx(rate)


def test_rotation_metadata_turns_the_frames_upright(tmp_path):
    image = np.zeros((32, 64, 3), np.uint8)
    image[:8, :16] = 255                                   # a mark at the stored top-left
    path = _encode(tmp_path / "phone.mp4", [image] * 3, rotation=-90)      # shown turned 90 degrees clockwise
    for frames in (list(video_io.iter_pose_frames(path)),
                   [f for c in video_io.iter_video_frames(path) for f in video_io.frames_to_uint8(c)]):
        assert len(frames) == 3 and frames[0].shape == (64, 32, 3)
        assert frames[0][:16, -8:].mean() > 200 and frames[0][:16, :8].mean() < 50   # the mark now at the top-right


def test_variable_frame_rate_is_picked_by_timestamp(tmp_path):
    stamps = [0, 100, 150, 500, 550, 600, 700]             # ms: a burst, a 0.35 s hold, even steps
    path = _encode(tmp_path / "vfr.mp4", _levels(len(stamps)), rate=10, stamps=stamps, time_base=Fraction(1, 1000))
    assert video_io.probe_video(path).variable_rate
    picked = [_index(f) for f in video_io.iter_pose_frames(path, target_fps=20)]
    # output frame j shows the frame on screen at j / 20 s
    assert picked == [0, 0, 1, 2, 2, 2, 2, 2, 2, 2, 3, 4, 5, 5, 6, 6]
    # without a target rate a variable-rate file is read at its average rate, by timestamp too
    average = video_io.probe_video(path).fps
    expected = [max(k for k, s in enumerate(stamps) if s / 1000 <= j / average + 1e-6) for j in range(7)]
    assert [_index(f) for f in video_io.iter_pose_frames(path)] == expected


def test_a_timestamp_jump_is_held_a_bounded_time(tmp_path):
    stamps = [0, 42, 84, 10 ** 8, 10 ** 8 + 42]            # ms: 24 fps, then a jump of 28 hours (Matroska keeps it)
    path = _encode(tmp_path / "jump.mkv", _levels(len(stamps)), stamps=stamps, time_base=Fraction(1, 1000))
    frames = [_index(f) for f in video_io.iter_pose_frames(path, target_fps=24)]
    assert frames[0] == 0 and 3 in frames and frames == sorted(frames)
    assert len(frames) <= len(stamps) + 24 * video_io.MAX_FRAME_GAP_S      # not 28 hours of repeats


def test_constant_rate_picks_equal_the_index_rule():
    class Frame:
        def __init__(self, pts, duration):
            self.pts, self.duration = pts, duration

    for source, time_base in ((24, Fraction(1, 12288)), (30000 / 1001, Fraction(1, 30000)), (25, Fraction(1, 90000))):
        frames = [Frame(round(k / source / time_base), round(1 / source / time_base)) for k in range(200)]
        for target in (8, 12, 16, 24, 25, 30, 48, 60):
            tolerance = min(0.5 * float(time_base), 0.25 / target)
            timed = video_io._timed(frames, time_base, 1 / source)
            picked = [frames.index(f) for f, n in video_io.pick_by_time(timed, target, tolerance) for _ in range(n)]
            expected = []
            for index, _ in video_io.resample_indices(source, target):
                if index >= len(frames):
                    break
                expected.append(index)
            assert picked == expected, (source, target)


def test_large_frames_are_scaled_at_decode_and_small_ones_kept(tmp_path):
    rng = np.random.default_rng(0)
    small = _encode(tmp_path / "small.mp4", [rng.integers(0, 255, (48, 64, 3), np.uint8) for _ in range(3)])
    as_stored = [f for c in video_io.iter_video_frames(small) for f in video_io.frames_to_uint8(c)]
    pose = list(video_io.iter_pose_frames(small))
    assert all(a.dtype == np.uint8 and (a == b).all() for a, b in zip(pose, as_stored)) and len(pose) == 3
    wide = np.zeros((1088, 2400, 3), np.uint8)
    wide[:, :1200] = 200                                   # left half bright
    big = _encode(tmp_path / "big.mp4", [wide] * 2)
    frames = list(video_io.iter_pose_frames(big))
    assert [f.shape for f in frames] == [(870, 1920, 3)] * 2
    assert frames[0][:, :900].mean() > 180 and frames[0][:, 1020:].mean() < 20
    assert max(f.shape[1] for f in video_io.iter_pose_frames(big, max_side=640)) == 640


def test_decoder_threads_are_bounded_by_the_frame_budget():
    class Stream:
        class codec_context:                               # noqa: N801 (stands in for PyAV's attribute)
            width, height = 7680, 4320

    threads = video_io._decoder_threads(Stream)
    assert 1 <= threads and threads * 7680 * 4320 * 3 // 2 <= video_io.DECODER_FRAME_BUDGET
