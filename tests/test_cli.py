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


BASE = ["--photo", "p.png", "--out", "o.mp4", "--dit", "d", "--vae", "v", "--t5", "t", "--clip", "c"]


def test_parser_defaults_and_exclusive_sources():
    parser = cli.build_parser()
    args = parser.parse_args(BASE + ["--video", "v.mp4"])
    assert args.fps is None and args.offload == "auto" and args.blocks_to_swap == 20 and args.target_fps == 16.0
    assert args.max_vram_gb == 0.0 and args.seed == 106060 and args.augment_seed == 0
    with pytest.raises(SystemExit):
        parser.parse_args(BASE + ["--video", "v.mp4", "--pose-dir", "d"])
    with pytest.raises(SystemExit):
        parser.parse_args(BASE)


def test_options_use_the_node_vocabulary(capsys):
    parser = cli.build_parser()
    args = parser.parse_args(BASE + ["--video", "v.mp4", "--attention", "flash-attn", "--offload", "block_swap",
                                     "--blocks-to-swap", "7", "--pose-model", "dw.onnx", "--pose-cfg-start", "0.2",
                                     "--pose-cfg-end", "0.5", "--no-person", "empty", "--seed", str(2 ** 64 - 1)])
    assert (args.attention, args.offload, args.blocks_to_swap, args.pose_model) == ("flash-attn", "block_swap", 7,
                                                                                    "dw.onnx")
    assert (args.pose_cfg_start, args.pose_cfg_end, args.no_person, args.seed) == (0.2, 0.5, "empty", 2 ** 64 - 1)
    for wrong in (["--offload", "none"], ["--attention", "flash"], ["--estimator", "dw.onnx"],
                  ["--pose-cfg-window", "0", "1"], ["--driving-fps", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(BASE + ["--video", "v.mp4"] + wrong)
    capsys.readouterr()
    for seed_option in ("--seed", "--augment-seed"):
        with pytest.raises(SystemExit):
            parser.parse_args(BASE + ["--video", "v.mp4", seed_option, str(2 ** 64)])
        assert "must be an integer from 0 to 2**64-1, got 18446744073709551616" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(BASE + ["--video", "v.mp4", "--max-vram-gb", "-1"])
    assert "--max-vram-gb: must be a number of GB >= 0" in capsys.readouterr().err


# CLI options whose node widget has no CLI default to share, with the reason.
NOT_SHARED = {
    "detector": "a path here; a file name in models/dwpose for the node",
    "pose_model": "a path here; a file name in models/dwpose for the node",
    "fps": "DecodeVideo's fps is wired to ExtractPose's fps in the bundled workflows; the CLI defaults to that rate",
}


def test_every_option_with_a_widget_has_the_widgets_default(tmp_path):
    import json
    import sys

    from conftest import REPO_ROOT

    sys.path.insert(0, str(REPO_ROOT / "tests"))
    import comfy_standin

    comfy_standin.install(tmp_path)
    try:
        widgets = {}
        for name, cls in comfy_standin.load_pack().NODE_CLASS_MAPPINGS.items():
            for section in ("required", "optional"):
                for widget, entry in cls.INPUT_TYPES().get(section, {}).items():
                    if not (isinstance(entry[0], list) or entry[0] in ("INT", "FLOAT", "STRING", "BOOLEAN")):
                        continue                                    # a socket, not a widget
                    assert widget not in widgets or widget == "lora_name", f"{widget} in two nodes"
                    widgets.setdefault(widget, (name, entry[0], entry[1] if len(entry) > 1 else {}))
    finally:
        comfy_standin.uninstall()
    options = {a.dest: a for a in cli.build_parser()._actions}
    shared = sorted(set(options) & set(widgets) - set(NOT_SHARED))
    assert set(shared) >= {
        "precision", "attention", "offload", "blocks_to_swap", "max_vram_gb", "person", "no_person", "max_frames",
        "target_fps", "augment_seed", "canvas", "scale_fallback", "prompt", "negative_prompt", "steps", "text_cfg",
        "pose_cfg", "pose_cfg_start", "pose_cfg_end", "shift", "seed", "solver", "length", "max_area", "first_frame",
        "segment_frames", "segment_overlap", "color_correction"}
    for dest in shared:
        node, kind, opts = widgets[dest]
        assert options[dest].default == opts["default"], f"--{dest.replace('_', '-')} vs {node}.{dest}"
        if isinstance(kind, list):
            assert list(options[dest].choices) == kind, f"--{dest.replace('_', '-')} choices vs {node}.{dest}"
    for path in sorted((REPO_ROOT / "workflows" / "api").glob("*.json")):
        decode = [n for n in json.loads(path.read_text()).values() if n["class_type"] == "DecodeVideo"]
        assert decode and all(isinstance(n["inputs"]["fps"], list) for n in decode), path.name
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


def test_lora_specs():
    specs = cli._loras(["a.safetensors", "dir/b.safetensors:0.5"])
    assert specs == [("a.safetensors", 1.0), ("dir/b.safetensors", 0.5)]
    with pytest.raises(cli.CLIError, match="strength"):
        cli._loras(["b.safetensors:strong"])


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
    assert "--video needs --detector (yolox_l.onnx) and --pose-model (dw-ll_ucoco_384.onnx)" in caplog.text
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
              "--steps", "2", "--max-area", str(96 * 64), "--pose-cfg", "2.0", "--pose-cfg-start", "0",
              "--pose-cfg-end", "1", "--length", "0"]
    code = cli.main(common + ["--video", str(kit.video), "--out", str(out), "--target-fps", "0",
                              "--detector", str(m / "dwpose" / tiny_kit.DETECTOR_FILE),
                              "--pose-model", str(m / "dwpose" / tiny_kit.ESTIMATOR_FILE)])
    assert code == 0 and out.is_file()
    frames, fps = video_io.read_video(out)
    driving = sum(chunk.shape[0] for chunk in video_io.iter_video_frames(kit.video))
    stride = VAE_TEMPORAL_STRIDE
    assert frames.shape[0] == 1 + stride * ((driving - 1) // stride)   # 4n + 1 frames (the pipeline rounds down)
    assert fps == pytest.approx(video_io.probe_video(kit.video).fps)   # --target-fps 0: the driving video's rate
    assert frames.shape[1] * frames.shape[2] <= 96 * 64 and torch.isfinite(frames).all()


@pytest.mark.parametrize("canvas", ["2x", "1x"])
def test_poses_from_video_are_lazy_and_equal_the_rendered_frames(tmp_path, canvas):
    """poses_from_video keeps keypoints and renders on demand; read through generate's resize, the frames are those
    the CLI used to render (and resize to the photo) up front."""
    import pose
    from steadydancer_core import as_pose_frames, resize_like_pil, tiny_kit

    kit = tiny_kit.write_kit(tmp_path / "models", tmp_path / "inputs")
    det, est = (tmp_path / "models" / "dwpose" / f for f in (tiny_kit.DETECTOR_FILE, tiny_kit.ESTIMATOR_FILE))
    args = cli.build_parser().parse_args(BASE + ["--video", str(kit.video), "--detector", str(det),
                                                 "--pose-model", str(est), "--canvas", canvas, "--target-fps", "0"])
    photo = cli.read_image(kit.photo)
    resized, positive, negative, _fps, _notes = cli.poses_from_video(args, photo, lambda done: None)
    assert not isinstance(positive, torch.Tensor) and len(positive) == len(negative) > 1

    reference, _ = pose.extract_reference(photo, det, est)
    frames = (f for c in video_io.iter_video_frames(kit.video) for f in c.mul(255).round().to(torch.uint8).numpy())
    aligned = pose.align(reference, pose.extract(frames, det, est))
    out_hw = None if canvas == "2x" else tuple(v // 2 for v in aligned.canvas_hw)
    size = tuple(resized.shape[:2])
    for lazy, frames in ((positive, aligned.frames), (negative, pose.augment_frames(aligned.frames, args.augment_seed))):
        eager = torch.cat([resize_like_pil(torch.from_numpy(pose.render(f, aligned.canvas_hw, output_hw=out_hw))
                                           .float().div(255)[None], size) for f in frames])
        assert torch.equal(resize_like_pil(as_pose_frames(lazy).frames(0, len(lazy)), size), eager)
