"""DecodeVideo output 'file': the mp4 is written to the output folder one segment at a time, with a numbered name
that never replaces an existing file, optional audio muxed in, and only a preview frame as IMAGE."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests"))

import comfy_standin  # noqa: E402
from steadydancer_core.video_io import read_video  # noqa: E402

H, W, SEG, N_SEG, FPS = 48, 64, 5, 3, 12.0


@pytest.fixture()
def env(tmp_path):
    host = comfy_standin.install(tmp_path)
    try:
        pack = comfy_standin.load_pack()
        cls = pack.NODE_CLASS_MAPPINGS["DecodeVideo"]
        yield host, cls, sys.modules[cls.__module__]
    finally:
        comfy_standin.uninstall()


def _result():
    return SimpleNamespace(segments=[object()] * N_SEG, width=W, height=H, num_frames=SEG * N_SEG)


def _latent():
    return {"samples": torch.zeros(1, 16, 1, 2, 2), "steadydancer_result": _result()}


def _patch_core(monkeypatch, module, events):
    """iter_decoded yields N_SEG segments of SEG frames, logging each; VideoWriter logs each write's frame count."""
    real = module.sd

    def iter_decoded(model, result, tiling="auto", tile_size=256, should_cancel=None, decoder=None):
        for s in range(N_SEG):
            events.append(("decoded", s))
            shade = torch.linspace(0, 1, SEG).view(SEG, 1, 1, 1) * (s + 1) / N_SEG
            yield s * SEG, shade.expand(SEG, H, W, 3).clone()

    class CountingWriter(real.VideoWriter):
        def write(self, frames):
            events.append(("write", int(frames.shape[0])))
            super().write(frames)

    monkeypatch.setattr(module, "sd", SimpleNamespace(iter_decoded=iter_decoded, VideoWriter=CountingWriter,
                                                      Cancelled=real.Cancelled))
    return real


def _decode(cls, **kw):
    args = dict(model=object(), latent=_latent(), tiling="auto", tile_size=256, fps=FPS, output="file",
                filename_prefix="SteadyDancer/test")
    args.update(kw)
    return cls().decode(**args)


def test_file_mode_writes_one_segment_at_a_time(env, monkeypatch):
    host, cls, module = env
    events = []
    _patch_core(monkeypatch, module, events)
    out = _decode(cls)
    # each segment is written before the next is decoded: never more than one segment held
    assert events == [e for s in range(N_SEG) for e in (("decoded", s), ("write", SEG))]
    preview, video = out["result"]
    assert preview.shape == (1, H, W, 3)
    ui = out["ui"]
    assert ui["animated"] == (True,)
    entry = ui["images"][0]
    assert entry["type"] == "output" and entry["subfolder"] == "SteadyDancer"
    path = host.output_dir / entry["subfolder"] / entry["filename"]
    assert path.is_file() and entry["filename"] == "test_00001_.mp4"
    assert Path(video.get_stream_source()) == path
    frames, fps = read_video(path)[:2]
    assert frames.shape[0] == SEG * N_SEG and frames.shape[1:3] == (H, W)
    assert abs(float(fps) - FPS) < 1e-3
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_existing_files_are_never_replaced(env, monkeypatch):
    host, cls, module = env
    _patch_core(monkeypatch, module, [])
    folder = host.output_dir / "SteadyDancer"
    folder.mkdir(parents=True)
    first = _decode(cls)["ui"]["images"][0]["filename"]
    before = (folder / first).read_bytes()
    (folder / "test_00002_.mp4").write_bytes(b"someone else's")
    second = _decode(cls)["ui"]["images"][0]["filename"]
    assert second not in (first, "test_00002_.mp4")
    assert (folder / first).read_bytes() == before
    assert (folder / "test_00002_.mp4").read_bytes() == b"someone else's"


def test_a_target_that_appears_meanwhile_is_not_replaced(env, monkeypatch):
    host, cls, module = env
    _patch_core(monkeypatch, module, [])
    bridge = sys.modules[cls.__module__.rsplit(".", 1)[0] + ".comfy_bridge"]
    real_target = bridge.output_target

    def racing_target(*args, **kw):
        path, file, sub = real_target(*args, **kw)
        Path(path).write_bytes(b"appeared")
        return path, file, sub

    monkeypatch.setattr(bridge, "output_target", racing_target)
    with pytest.raises(FileExistsError):
        _decode(cls)
    assert (host.output_dir / "SteadyDancer" / "test_00001_.mp4").read_bytes() == b"appeared"


def test_audio_is_muxed(env, monkeypatch):
    av = pytest.importorskip("av")
    host, cls, module = env
    _patch_core(monkeypatch, module, [])
    rate = 16000
    seconds = SEG * N_SEG / FPS
    t = torch.arange(int(rate * (seconds + 1.0))) / rate   # longer than the video: cut to its length
    waveform = torch.sin(2 * torch.pi * 440 * t).repeat(1, 2, 1) * 0.5
    entry = _decode(cls, audio={"waveform": waveform, "sample_rate": rate})["ui"]["images"][0]
    path = host.output_dir / entry["subfolder"] / entry["filename"]
    with av.open(str(path)) as container:
        assert len(container.streams.audio) == 1 and len(container.streams.video) == 1
        audio_s = float(container.streams.audio[0].duration * container.streams.audio[0].time_base)
    assert abs(audio_s - seconds) < 0.2
    assert read_video(path)[0].shape[0] == SEG * N_SEG


def test_frames_mode_is_the_default(env):
    host, cls, module = env
    spec = cls.INPUT_TYPES()
    assert spec["required"]["output"][1]["default"] == "frames"
    assert "audio" in spec["optional"]
