"""The one-command demo: tiny kit in a folder of its own, the full pipeline, an mp4 whose first frame is the photo."""
import numpy as np
import pytest

from steadydancer_core import demo, frames_to_uint8, iter_video_frames, probe_video


def test_demo_writes_a_video_whose_first_frame_is_the_photo(tmp_path, capsys):
    out = tmp_path / "demo.mp4"
    assert demo.main([str(out), "--steps", "1"]) == 0
    info = probe_video(out)
    assert info.frames == 5 and info.fps == 16.0
    printed = capsys.readouterr().out
    assert str(out.resolve()) in printed and "random" in printed
    assert [p.name for p in tmp_path.iterdir()] == ["demo.mp4"]       # nothing else left beside it


def test_demo_first_frame_is_the_photo(tmp_path):
    done = demo.run(tmp_path / "demo.mp4", steps=1)
    first = next(frames_to_uint8(chunk) for chunk in iter_video_frames(done["out"], max_frames=1))[0]
    photo = frames_to_uint8(done["photo"][None])[0]
    assert first.shape == photo.shape
    # H.264 at the default quality: frame 0 is the photo up to compression noise; a noise frame is far off
    assert float(np.abs(first.astype(np.float32) - photo.astype(np.float32)).mean()) < 6.0


def test_demo_never_replaces_a_file(tmp_path):
    out = tmp_path / "mine.mp4"
    out.write_bytes(b"user video")
    with pytest.raises(SystemExit, match="exists"):
        demo.main([str(out)])
    assert out.read_bytes() == b"user video"
