"""video_io: streaming read, incremental H.264 write, resampling, clear errors."""
import numpy as np
import pytest
import torch

from steadydancer_core import video_io


def _gradient_frames(count: int, height: int = 48, width: int = 64) -> torch.Tensor:
    """Smooth frames whose brightness encodes the frame index (survives lossy coding)."""
    frames = torch.empty(count, height, width, 3)
    ys = torch.linspace(0, 1, height)[:, None]
    for i in range(count):
        level = (i + 1) / (count + 1)
        frames[i, ..., 0] = level
        frames[i, ..., 1] = ys.expand(height, width) * 0.5 + 0.25
        frames[i, ..., 2] = 1.0 - level
    return frames


def test_write_then_read_roundtrip(tmp_path):
    frames = _gradient_frames(10)
    path = tmp_path / "clip.mp4"
    with video_io.VideoWriter(path, fps=16, crf=10) as writer:
        writer.write(frames[:4])       # segment by segment
        writer.write(frames[4:])
    assert writer.frames_written == 10
    info = video_io.probe_video(path)
    assert (info.width, info.height) == (64, 48)
    assert info.fps == pytest.approx(16.0)
    back, fps = video_io.read_video(path)
    assert fps == pytest.approx(16.0)
    assert back.shape == (10, 48, 64, 3) and back.dtype == torch.float32
    assert 0.0 <= back.min() and back.max() <= 1.0
    assert (back - frames).abs().mean() < 0.03
    # frame order preserved: the red level rises frame by frame
    reds = back[..., 0].mean(dim=(1, 2))
    assert torch.all(reds[1:] > reds[:-1])


def test_streaming_chunks_and_max_frames(tmp_path):
    path = video_io.write_video(tmp_path / "c.mp4", _gradient_frames(11), fps=8)
    chunks = list(video_io.iter_video_frames(path, chunk_frames=4))
    assert [c.shape[0] for c in chunks] == [4, 4, 3]
    chunks = list(video_io.iter_video_frames(path, chunk_frames=4, max_frames=6))
    assert [c.shape[0] for c in chunks] == [4, 2]


def test_resample_to_lower_and_higher_fps(tmp_path):
    path = video_io.write_video(tmp_path / "c.mp4", _gradient_frames(12), fps=24)
    half, fps = video_io.read_video(path, target_fps=12)
    assert fps == 12 and half.shape[0] == 6
    double, _ = video_io.read_video(path, target_fps=48)
    assert double.shape[0] == 24
    pairs = [next(p) for p in [video_io.resample_indices(30, 16)] for _ in range(5)]
    assert [s for s, _ in pairs] == [0, 1, 3, 5, 7]   # floor(j * 1.875)


def test_uint8_and_odd_sizes(tmp_path):
    frames = (np.random.default_rng(0).random((3, 17, 21, 3)) * 255).astype(np.uint8)
    with pytest.warns(UserWarning, match="odd"):
        video_io.write_video(tmp_path / "odd.mp4", frames, fps=10)
    info = video_io.probe_video(tmp_path / "odd.mp4")
    assert (info.width, info.height) == (22, 18)


def test_size_change_is_an_error(tmp_path):
    with video_io.VideoWriter(tmp_path / "x.mp4", fps=10) as writer:
        writer.write(torch.zeros(1, 16, 16, 3))
        with pytest.raises(video_io.VideoWriteError, match="frame size changed"):
            writer.write(torch.zeros(1, 32, 16, 3))


def test_bad_inputs_have_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        video_io.probe_video(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"definitely not a video" * 10)
    with pytest.raises(video_io.VideoReadError, match="could not be opened"):
        list(video_io.iter_video_frames(junk))
    with pytest.raises(video_io.VideoWriteError, match=r"\[T, H, W, 3\]"):
        video_io.write_video(tmp_path / "y.mp4", torch.zeros(2, 8, 8, 4), fps=10)
    with pytest.raises(video_io.VideoWriteError, match="fps"):
        video_io.VideoWriter(tmp_path / "z.mp4", fps=0)
