"""ExtractPose reads a file-backed VIDEO frame by frame: the same poses, frame picks and fps as the IMAGE path on
the decoded batch, without decoding the whole video (max_frames stops the decoder early)."""
from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests"))

import comfy_standin  # noqa: E402

COMMON = dict(detector="yolox_l.onnx", pose_model="dw-ll_ucoco_384.onnx", person="highest", no_person="hold")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """(host, node classes, pose_nodes module) with the tiny kit in the host's models and input folders."""
    with comfy_standin.host_with_kit(tmp_path_factory.mktemp("comfy")) as (host, nodes, _):
        yield host, nodes, sys.modules[comfy_standin.PACK_NAME + ".nodes.pose_nodes"]


def _video_path(host):
    from steadydancer_core import tiny_kit

    return host.input_dir / tiny_kit.VIDEO_FILE


def _assert_same_poses(a, b):
    assert len(a) == len(b) and a.image_hw == b.image_hw and a.missing_frames == b.missing_frames
    for x, y in zip(a, b):
        for name in ("bodies", "body_visible", "hands", "faces", "scores"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name))


def _no_whole_decode(monkeypatch):
    def refuse(self):
        raise AssertionError("the streaming path must not decode the whole video")

    monkeypatch.setattr(comfy_standin.VideoFromFile, "get_components", refuse)


@pytest.mark.parametrize("max_frames", [0, 3])
@pytest.mark.parametrize("target_fps", [0.0, 16.0, 40.0, 24.0])
def test_streamed_video_equals_the_image_path(env, monkeypatch, target_fps, max_frames):
    host, classes, _ = env
    video = comfy_standin.VideoFromFile(str(_video_path(host)))
    parts = video.get_components()
    frames, source_fps = parts.images, float(parts.frame_rate)
    node = classes["ExtractPose"]()
    args = dict(COMMON, max_frames=max_frames, target_fps=target_fps, images_fps=source_fps)
    expected = node.extract(**args, images=frames)
    _no_whole_decode(monkeypatch)
    streamed = node.extract(**args, video=video)
    _assert_same_poses(streamed["result"][0].sequence, expected["result"][0].sequence)
    assert streamed["result"][2] == pytest.approx(expected["result"][2])
    assert streamed["result"][0].fps == pytest.approx(expected["result"][0].fps)
    torch.testing.assert_close(streamed["result"][1], expected["result"][1])
    # the same report, and the video's audio (the tiny kit's has none) said on the last line
    head, audio = streamed["ui"]["text"][0].rsplit("\n", 1)
    assert [head] == expected["ui"]["text"] and audio == "driving audio: none in this video"
    assert streamed["result"][4] is None and expected["result"][4] is None


def test_bytesio_video_is_streamed(env, monkeypatch):
    host, classes, _ = env
    path = _video_path(host)
    node = classes["ExtractPose"]()
    args = dict(COMMON, max_frames=0, target_fps=16.0, images_fps=24.0)
    expected = node.extract(**args, video=comfy_standin.VideoFromFile(str(path)))
    _no_whole_decode(monkeypatch)
    streamed = node.extract(**args, video=comfy_standin.VideoFromFile(io.BytesIO(path.read_bytes())))
    _assert_same_poses(streamed["result"][0].sequence, expected["result"][0].sequence)
    assert streamed["result"][2] == expected["result"][2] == pytest.approx(16.0)


def test_max_frames_stops_decoding_early(env, monkeypatch):
    host, classes, pose_nodes = env
    video_io = sys.modules[pose_nodes.sd.iter_pose_frames.__module__]
    opened = video_io._open_input
    decoded = []

    class Counting:
        def __init__(self, container):
            self._container = container

        def __getattr__(self, name):
            return getattr(self._container, name)

        def decode(self, *args, **kwargs):
            for frame in self._container.decode(*args, **kwargs):
                decoded.append(frame)
                yield frame

    monkeypatch.setattr(video_io, "_open_input", lambda path: Counting(opened(path)))
    from steadydancer_core import tiny_kit

    video = comfy_standin.VideoFromFile(str(_video_path(host)))
    out = classes["ExtractPose"]().extract(**COMMON, max_frames=2, target_fps=0.0, images_fps=24.0, video=video)
    assert len(out["result"][0].sequence) == 2 and "max_frames" in out["ui"]["text"][0]
    assert out["ui"]["text"][0].startswith("Poses of 2 driving frames at 24 fps (0.1 s); a person in 2 of 2 frames\n")
    assert len(decoded) == 2 < tiny_kit.VIDEO_FRAMES


def test_video_without_a_source_file_is_decoded_whole(env):
    host, classes, _ = env
    frames = comfy_standin.VideoFromFile(str(_video_path(host))).get_components().images
    video = comfy_standin.VideoFromComponents(comfy_standin.VideoComponents(frames, frame_rate=24))
    node = classes["ExtractPose"]()
    a = node.extract(**COMMON, max_frames=0, target_fps=16.0, images_fps=24.0, video=video)["result"]
    b = node.extract(**COMMON, max_frames=0, target_fps=16.0, images_fps=24.0, images=frames)["result"]
    _assert_same_poses(a[0].sequence, b[0].sequence)
    assert a[2] == b[2] == pytest.approx(16.0)


def test_preview_keeps_at_most_its_frame_limit(env):
    _, _, pose_nodes = env
    assert pose_nodes.preview_indices(5, 48) == [0, 1, 2, 3, 4]
    picks = pose_nodes.preview_indices(1000, 48)
    assert len(picks) == 48 and picks[0] == 0 and picks[-1] == 999 and picks == sorted(set(picks))
    assert len(pose_nodes.preview_indices(49, 48)) == 48


def test_components_audio_is_cut_to_the_kept_frames(env):
    host, classes, _ = env
    frames = comfy_standin.VideoFromFile(str(_video_path(host))).get_components().images
    audio = {"waveform": torch.rand(1, 2, 8000 * 10), "sample_rate": 8000}          # 10 s, longer than the frames
    video = comfy_standin.VideoFromComponents(comfy_standin.VideoComponents(frames, audio=audio, frame_rate=24))
    out = classes["ExtractPose"]().extract(**COMMON, max_frames=2, target_fps=0.0, images_fps=24.0, video=video)
    cut = out["result"][4]
    assert cut["sample_rate"] == 8000 and cut["waveform"].shape == (1, 2, round(2 / 24 * 8000))
    torch.testing.assert_close(cut["waveform"], audio["waveform"][..., :cut["waveform"].shape[-1]])


def test_pick_frames_resamples_and_cuts_as_the_file_path():
    from steadydancer_core import pick_frames

    assert pick_frames(10, 24.0, 0, 0.0) == (list(range(10)), 24.0, [])
    picks, fps, notes = pick_frames(48, 24.0, 5, 16.0)
    assert picks == [0, 1, 3, 4, 6] and fps == 16.0 and len(notes) == 2
    with pytest.raises(ValueError, match="max_frames"):
        pick_frames(10, 24.0, -1, 0.0)
