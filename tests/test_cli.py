"""Headless CLI: argument handling, pose folders, and an end-to-end run on the tiny model kit."""
import importlib.util

import numpy as np
import pytest
import torch

from steadydancer_core import cli, video_io
from steadydancer_core.models.vae_config import VAE_TEMPORAL_STRIDE

HAVE_PIPELINE = all(importlib.util.find_spec(m) is not None
                    for m in ("steadydancer_core.sampling.pipeline", "steadydancer_core.runtime.bundle", "steadydancer_core.tiny_kit"))


def _write_png(path, rgb):
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def test_parser_defaults_and_exclusive_sources():
    parser = cli.build_parser()
    base = ["--photo", "p.png", "--out", "o.mp4", "--dit", "d", "--vae", "v", "--t5", "t", "--clip", "c"]
    args = parser.parse_args(base + ["--video", "v.mp4"])
    assert args.fps == cli.DEFAULT_FPS and args.offload == "auto" and args.driving_fps is None
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--video", "v.mp4", "--pose-dir", "d"])
    with pytest.raises(SystemExit):
        parser.parse_args(base)


def test_parser_noise_and_auto_shift():
    parser = cli.build_parser()
    base = ["--photo", "p.png", "--out", "o.mp4", "--dit", "d", "--vae", "v", "--t5", "t", "--clip", "c",
            "--video", "v.mp4"]
    args = parser.parse_args(base)
    assert args.noise == "cpu" and args.shift == 5.0
    args = parser.parse_args(base + ["--noise", "official", "--shift", "auto"])
    assert args.noise == "official" and args.shift == "auto"
    assert parser.parse_args(base + ["--shift", "3"]).shift == 3.0
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--noise", "gpu"])
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--shift", "high"])


def test_lora_and_offload_specs():
    specs = cli._loras(["a.safetensors", "dir/b.safetensors:0.5"])
    assert specs == [("a.safetensors", 1.0), ("dir/b.safetensors", 0.5)]
    with pytest.raises(cli.CLIError, match="strength"):
        cli._loras(["b.safetensors:strong"])
    assert cli._offload("auto") == "auto" and cli._offload("12") == 12
    with pytest.raises(cli.CLIError, match="--offload"):
        cli._offload("lots")


def test_pose_dir_layouts(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        _write_png(tmp_path / "official" / "positive" / f"{i:04d}.jpg", rng.integers(0, 255, (32, 24, 3), np.uint8))
        _write_png(tmp_path / "official" / "negative" / f"{i:04d}.jpg", rng.integers(0, 255, (32, 24, 3), np.uint8))
        _write_png(tmp_path / "flat" / f"{i:04d}.png", rng.integers(0, 255, (32, 24, 3), np.uint8))
    pos, neg = cli.load_pose_dir(tmp_path / "official", (16, 12))
    assert pos.shape == neg.shape == (3, 16, 12, 3) and 0 <= pos.min() and pos.max() <= 1
    pos, neg = cli.load_pose_dir(tmp_path / "flat", (32, 24))
    assert pos.shape == (3, 32, 24, 3) and neg is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(cli.CLIError, match="no pose images"):
        cli.load_pose_dir(tmp_path / "empty", (8, 8))
    with pytest.raises(cli.CLIError, match="not found"):
        cli.load_pose_dir(tmp_path / "absent", (8, 8))


def test_clear_errors_exit_with_code_2(tmp_path, caplog):
    photo = _write_png(tmp_path / "p.png", np.zeros((16, 16, 3), np.uint8))
    args = ["--photo", str(photo), "--video", str(tmp_path / "v.mp4"), "--out", str(tmp_path / "o.mp4"),
            "--dit", "d", "--vae", "v", "--t5", "t", "--clip", "c"]
    assert cli.main(args) == 2
    assert "--detector" in caplog.text
    assert cli.main(args[:1] + [str(tmp_path / "missing.png")] + args[2:]) == 2
    assert "image not found" in caplog.text


@pytest.mark.skipif(not HAVE_PIPELINE, reason="pipeline / bundle / tiny kit not present yet")
def test_end_to_end_on_the_tiny_kit(tmp_path):
    from steadydancer_core import tiny_kit

    kit = tiny_kit.write_kit(tmp_path / "models", tmp_path / "inputs")
    m = tmp_path / "models"
    out = tmp_path / "out" / "dance.mp4"
    common = ["--photo", str(kit.photo), "--prompt", "a person dancing",
              "--dit", str(m / "diffusion_models" / tiny_kit.DIT_FP8), "--vae", str(m / "vae" / tiny_kit.VAE_FILE),
              "--t5", str(m / "text_encoders" / tiny_kit.T5_FP16),
              "--clip", str(m / "clip_vision" / tiny_kit.CLIP_FILE),
              "--steps", "2", "--max-area", str(96 * 64), "--pose-cfg", "2.0", "--pose-cfg-window", "0", "1"]
    code = cli.main(common + ["--video", str(kit.video), "--out", str(out), "--driving-fps", "0",
                              "--detector", str(m / "dwpose" / tiny_kit.DETECTOR_FILE),
                              "--estimator", str(m / "dwpose" / tiny_kit.ESTIMATOR_FILE)])
    assert code == 0 and out.is_file()
    frames, fps = video_io.read_video(out)
    driving = sum(chunk.shape[0] for chunk in video_io.iter_video_frames(kit.video))
    stride = VAE_TEMPORAL_STRIDE
    assert frames.shape[0] == 1 + stride * ((driving - 1) // stride)   # 4n + 1 frames (the pipeline rounds down)
    assert fps == pytest.approx(cli.DEFAULT_FPS)
    assert frames.shape[1] * frames.shape[2] <= 96 * 64 and torch.isfinite(frames).all()
