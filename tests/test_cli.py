"""Headless CLI: argument handling, pose folders, and an end-to-end run on the tiny model kit."""
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import pose_run as _pose_run, write_png as _write_png
from steadydancer_core import cli, video_io
from steadydancer_core.models.vae_config import VAE_TEMPORAL_STRIDE

BASE = ["--photo", "p.png", "--out", "o.mp4", "--dit", "d", "--vae", "v", "--t5", "t", "--clip-vision", "c"]


def test_parser_defaults_and_exclusive_sources():
    parser = cli.build_parser()
    args = parser.parse_args(BASE + ["--video", "v.mp4"])
    assert args.fps == 0.0 and args.offload == "auto" and args.blocks_to_swap == 20 and args.target_fps == 16.0
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
    assert "--max-vram-gb: max_vram_gb must be a number from 0 to 1024" in capsys.readouterr().err


def test_an_old_spelling_still_works_with_a_deprecation_line(caplog):
    with caplog.at_level("WARNING", logger="steadydancer"):
        args = cli.build_parser().parse_args(BASE[:-2] + ["--clip", "c.safetensors", "--video", "v.mp4"])
    assert args.clip_vision == "c.safetensors"
    assert "--clip is deprecated and will be removed in the next version; use --clip-vision" in caplog.text


# CLI options whose node widget has no CLI default to share, with the reason.
NOT_SHARED = {
    "detector": "a path here; a file name in models/dwpose for the node",
    "pose_model": "a path here; a file name in models/dwpose for the node",
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
                    # background: AlignPose and the sampler composite the same photo (one default, PHOTO);
                    # tiling / tile_size: the sampler's options and DecodeVideo tile the VAE (one row, VAE_TILING);
                    # the multi-GPU loader repeats the loader's declarations exactly
                    same = widget in widgets and widgets[widget][1:] == (entry[0], entry[1] if len(entry) > 1 else {})
                    assert widget not in widgets or same or widget in ("lora_name", "background", "tiling",
                                                                       "tile_size"), \
                        f"{widget} in two nodes"
                    assert widget != "background" or widget not in widgets or entry[1] == widgets[widget][2], \
                        "background differs between AlignPose and the sampler"
                    assert widget not in ("tiling", "tile_size") or widget not in widgets or \
                        entry[1]["default"] == widgets[widget][2]["default"], f"{widget} defaults differ"
                    widgets.setdefault(widget, (name, entry[0], entry[1] if len(entry) > 1 else {}))
    finally:
        comfy_standin.uninstall()
    options = {a.dest: a for a in cli.build_parser()._actions}
    shared = sorted(set(options) & set(widgets) - set(NOT_SHARED))
    assert set(shared) >= {
        "precision", "attention", "offload", "blocks_to_swap", "max_vram_gb", "person", "no_person", "max_frames",
        "target_fps", "augment_seed", "canvas", "scale_fallback", "prompt", "negative_prompt", "steps", "text_cfg",
        "pose_cfg", "pose_cfg_start", "pose_cfg_end", "shift", "seed", "solver", "length", "max_area", "first_frame",
        "segment_frames", "segment_overlap", "color_correction", "noise", "pose_resize", "background", "step_cache",
        "cache_threshold", "cache_keep_first", "cache_keep_last", "cache_max_skip"}
    for dest in shared:
        node, kind, opts = widgets[dest]
        assert options[dest].default == opts["default"], f"--{dest.replace('_', '-')} vs {node}.{dest}"
        if isinstance(kind, list):
            assert list(options[dest].choices) == kind, f"--{dest.replace('_', '-')} choices vs {node}.{dest}"
    for path in sorted((REPO_ROOT / "workflows" / "api").glob("*.json")):
        decode = [n for n in json.loads(path.read_text()).values() if n["class_type"] == "DecodeVideo"]
        assert decode and all(n["inputs"]["fps"] == 0.0 for n in decode), path.name    # from the latent
def test_parser_noise_and_auto_shift():
    parser = cli.build_parser()
    base = BASE + ["--video", "v.mp4"]
    args = parser.parse_args(base)
    assert args.noise == "cpu" and args.shift == 5.0
    args = parser.parse_args(base + ["--noise", "official", "--shift", "auto"])
    assert args.noise == "official" and args.shift == "auto"
    assert parser.parse_args(base + ["--shift", "3"]).shift == 3.0
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--noise", "gpu"])
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--shift", "high"])


def test_parser_step_cache_options(capsys):
    parser = cli.build_parser()
    base = BASE + ["--video", "v.mp4"]
    args = parser.parse_args(base + ["--step-cache", "magcache", "--cache-threshold", "0.2", "--cache-keep-first",
                                     "3", "--cache-keep-last", "0", "--cache-max-skip", "4"])
    assert (args.step_cache, args.cache_threshold, args.cache_keep_first, args.cache_keep_last,
            args.cache_max_skip) == ("magcache", 0.2, 3, 0, 4)
    for wrong in (["--step-cache", "fast"], ["--cache-threshold", "-1"], ["--cache-max-skip", "-2"]):
        with pytest.raises(SystemExit):
            parser.parse_args(base + wrong)
    assert "--cache-max-skip" in capsys.readouterr().err


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
    pos, neg = cli.load_pose_dir(tmp_path / "official")      # read when generate asks, at the files' size
    assert len(pos) == len(neg) == 3 and pos.frames(1, 3).shape == (2, 32, 24, 3)
    assert pos.frames(0, 1).dtype == np.uint8 and (neg.frames(2, 3)[0] == cli.read_image(neg.files[2])).all()
    pos, neg = cli.load_pose_dir(tmp_path / "flat")
    assert len(pos) == 3 and neg is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(cli.CLIError, match="no pose images"):
        cli.load_pose_dir(tmp_path / "empty")
    with pytest.raises(cli.CLIError, match="not found"):
        cli.load_pose_dir(tmp_path / "absent")


def test_clear_errors_exit_with_code_2(tmp_path, caplog):
    photo = _write_png(tmp_path / "p.png", np.zeros((16, 16, 3), np.uint8))
    (tmp_path / "v.mp4").write_bytes(b"")
    args = ["--photo", str(photo), "--video", str(tmp_path / "v.mp4"), "--out", str(tmp_path / "o.mp4"),
            "--dit", "d", "--vae", "v", "--t5", "t", "--clip-vision", "c"]
    assert cli.main(args) == 2
    assert "--video needs --detector (yolox_l.onnx) and --pose-model (dw-ll_ucoco_384.onnx)" in caplog.text
    assert cli.main(args[:1] + [str(tmp_path / "missing.png")] + args[2:]) == 2
    assert "image not found" in caplog.text


def test_end_to_end_on_the_tiny_kit(tmp_path):
    from steadydancer_core import tiny_kit

    kit = tiny_kit.write_kit(tmp_path / "models", tmp_path / "inputs")
    m = tmp_path / "models"
    out = tmp_path / "out" / "dance.mp4"
    common = ["--photo", str(kit.photo), "--prompt", "a person dancing",
              "--dit", str(m / "diffusion_models" / tiny_kit.DIT_FP8), "--vae", str(m / "vae" / tiny_kit.VAE_FILE),
              "--t5", str(m / "text_encoders" / tiny_kit.T5_FP16),
              "--clip-vision", str(m / "clip_vision" / tiny_kit.CLIP_FILE),
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


# --- options, output, transparency and --models -------------------------------------------------------------------

@pytest.fixture
def no_models(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("a model was loaded although an option was wrong")
    monkeypatch.setattr(cli, "load_model", refuse)
    monkeypatch.setattr(cli, "check_model_files", lambda files: None)     # stand-in files hold no tensors


def test_every_option_is_checked_before_loading(tmp_path, capsys, caplog, no_models):
    base = _pose_run(tmp_path) + ["--out", str(tmp_path / "o.mp4")]
    wrong = {
        "--attention": ["flash"], "--fps": ["nan", "inf", "-2", "1e9", "1e-9"], "--shift": ["inf", "nan", "0", "-1", "high"],
        "--max-area": [str(4096 * 4096 + 1), "10"], "--steps": ["0", "-3"], "--pose-cfg": ["nan", "inf", "-1"],
        "--text-cfg": ["inf", "nan", "-0.5"], "--seed": [str(2 ** 64), "-1"], "--background": ["grey", "#12345"],
        "--target-fps": ["nan", "1e6", "1e-9"], "--crf": ["99"], "--segment-frames": ["10", "3"],
        "--segment-overlap": ["4"], "--blocks-to-swap": ["-1"], "--max-frames": ["-1"],
    }
    for option, values in wrong.items():
        for value in values:
            assert cli.main(base + [option, value]) == 2, (option, value)
            err = capsys.readouterr().err
            assert f"argument {option}" in err and len(err.strip().splitlines()) == 1, err
    for extra, message in (
            (["--lora", str(tmp_path / "l.safetensors:inf")], "the strength after ':' must be a number from -10 to 10"),
            (["--lora", str(tmp_path / "absent.safetensors")], "--lora"),
            (["--pose-cfg-start", "0.6", "--pose-cfg-end", "0.2"], "--pose-cfg-start (0.6) must not be after "
                                                                   "--pose-cfg-end (0.2)"),
            (["--segment-frames", "9", "--segment-overlap", "9"], "--segment-overlap (9) must be smaller than "
                                                                   "--segment-frames (9)"),
            (["--tokenizer", str(tmp_path / "absent")], "--tokenizer")):
        caplog.clear()
        assert cli.main(base + extra) == 2, extra
        assert message in caplog.text
    args = cli.build_parser().parse_args(base + ["--shift", "auto", "--fps", "24", "--background", "#FF8000"])
    assert (args.shift, args.fps, args.background) == ("auto", 24.0, "#FF8000")


def test_missing_inputs_and_unreadable_photo(tmp_path, caplog, no_models):
    base = _pose_run(tmp_path) + ["--out", str(tmp_path / "o.mp4")]
    for option, message in (("--photo", "image not found"), ("--pose-dir", "folder not found"),
                            ("--vae", "file not found"), ("--dit", "file or folder not found")):
        caplog.clear()
        args = list(base)
        args[args.index(option) + 1] = str(tmp_path / "absent.png")
        assert cli.main(args) == 2 and f"{option} " in caplog.text and message in caplog.text
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    caplog.clear()
    args = list(base)
    args[args.index("--photo") + 1] = str(broken)
    assert cli.main(args) == 2 and "is not a readable image" in caplog.text
    caplog.clear()
    assert cli.main(base[:base.index("--dit")] + ["--steps", "1", "--out", str(tmp_path / "o.mp4")]) == 2
    assert "--models DIR" in caplog.text


class _FakeResult:
    notices, width, height = (), 16, 16


def _fake_generate(fail: bool):
    def generate(model, photo, positive, negative, settings, progress, on_frames):
        on_frames(0, torch.rand(5, 16, 16, 3))
        if fail:
            raise RuntimeError("generation failed half-way")
        return _FakeResult()
    return generate


def test_output_is_written_beside_and_renamed_only_on_success(tmp_path, caplog, monkeypatch):
    base = _pose_run(tmp_path)
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: type("M", (), {"fp8_matmul_report": ""})())
    monkeypatch.setattr(cli, "check_model_files", lambda files: None)     # stand-in files hold no tensors
    out = tmp_path / "out" / "dance.mp4"
    out.parent.mkdir()
    out.write_bytes(b"an earlier video")
    listing = lambda: sorted(p.name for p in out.parent.iterdir())

    # refused: an existing --out without --overwrite, a folder, one of the inputs (photo, a pose frame, a model)
    assert cli.main(base + ["--out", str(out)]) == 2 and "exists; pass --overwrite" in caplog.text
    assert cli.main(base + ["--out", str(out.parent), "--overwrite"]) == 2 and "is a folder" in caplog.text
    for victim, option in ((tmp_path / "photo.png", "--photo"), (tmp_path / "poses" / "positive" / "0000.png",
                                                                  "--pose-dir"), (tmp_path / "vae.safetensors", "--vae")):
        before = victim.read_bytes()
        caplog.clear()
        assert cli.main(base + ["--out", str(victim), "--overwrite"]) == 2, victim
        assert f"the input {option}" in caplog.text and victim.read_bytes() == before
    assert cli.main(base + ["--out", str(tmp_path / "o.avi")]) == 2 and "ending in .mp4" in caplog.text

    # a failed run leaves the existing file as it was and no temporary file behind
    monkeypatch.setattr(cli, "generate", _fake_generate(fail=True))
    with pytest.raises(RuntimeError, match="half-way"):
        cli.main(base + ["--out", str(out), "--overwrite"])
    assert out.read_bytes() == b"an earlier video" and listing() == ["dance.mp4"]
    fresh = tmp_path / "out" / "new.mp4"
    with pytest.raises(RuntimeError):
        cli.main(base + ["--out", str(fresh)])
    assert not fresh.exists() and listing() == ["dance.mp4"]

    # success: replaced (with --overwrite) or created, complete
    monkeypatch.setattr(cli, "generate", _fake_generate(fail=False))
    assert cli.main(base + ["--out", str(out), "--overwrite"]) == 0
    assert video_io.read_video(out)[0].shape[0] == 5 and listing() == ["dance.mp4"]
    assert cli.main(base + ["--out", str(fresh)]) == 0 and listing() == ["dance.mp4", "new.mp4"]


def test_transparent_photo_is_composited_on_the_background(tmp_path, caplog):
    import cv2
    from PIL import Image

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = (200, 40, 10)                  # RGB
    rgba[:4, ..., 3] = 255                         # top half opaque, bottom half transparent
    path = tmp_path / "cutout.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    with caplog.at_level("INFO", logger="steadydancer"):
        white = cli.read_image(path, background=(255, 255, 255))
    assert "has transparency: composited on background #FFFFFF" in caplog.text
    assert (white[:4] == (200, 40, 10)).all() and (white[4:] == 255).all()
    assert (cli.read_image(path, background=(0, 0, 0))[4:] == 0).all()
    assert (cli.read_image(path, background=(255, 128, 0))[4:] == (255, 128, 0)).all()
    half = rgba.copy()
    half[..., 3] = 128
    cv2.imwrite(str(path), cv2.cvtColor(half, cv2.COLOR_RGBA2BGRA))
    assert np.abs(cli.read_image(path, background=(0, 0, 0)).astype(int) - (100, 20, 5)).max() <= 1

    la = Image.new("LA", (6, 6), (90, 0))                                   # grey + alpha, fully transparent
    la.save(tmp_path / "la.png")
    assert (cli.read_image(tmp_path / "la.png", background=(0, 0, 255)) == (0, 0, 255)).all()
    pal = Image.new("P", (6, 6), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.save(tmp_path / "p.png", transparency=1)                           # palette colour 1 transparent
    assert (cli.read_image(tmp_path / "p.png", background=(255, 255, 255)) == 255).all()
    Image.new("RGBA", (6, 6), (10, 20, 30, 0)).save(tmp_path / "w.webp", lossless=True)
    assert (cli.read_image(tmp_path / "w.webp", background=(0, 0, 0)) == 0).all()
    caplog.clear()
    opaque = _write_png(tmp_path / "opaque.png", np.full((4, 4, 3), 7, np.uint8))
    with caplog.at_level("INFO", logger="steadydancer"):
        assert (cli.read_image(opaque, background=(255, 255, 255)) == 7).all()
    assert "transparency" not in caplog.text


def _layout(root, files):
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"stand-in")
    return root


def _resolved(models, *extra):
    args = cli.build_parser().parse_args(["--photo", "p.png", "--video", "v.mp4", "--out", "o.mp4",
                                          "--models", str(models), *extra])
    cli.resolve_models(args)
    return args


def test_models_folder_finds_the_standard_names(tmp_path, caplog):
    from steadydancer_core import tiny_kit as kit

    root = _layout(tmp_path / "models", [
        f"diffusion_models/{kit.DIT_FP16}", f"diffusion_models/SteadyDancer/{kit.DIT_FP8}",
        f"vae/{kit.VAE_FILE}", f"text_encoders/{kit.T5_FP16}", f"text_encoders/{kit.T5_FP8}",
        f"clip_vision/{kit.CLIP_FILE}", f"dwpose/{kit.DETECTOR_FILE}", f"dwpose/{kit.ESTIMATOR_FILE}"])
    args = _resolved(root)
    assert Path(args.dit) == root / "diffusion_models" / "SteadyDancer" / kit.DIT_FP8      # fp8 first
    assert Path(args.t5) == root / "text_encoders" / kit.T5_FP8
    assert (Path(args.vae), Path(args.clip_vision)) == (root / "vae" / kit.VAE_FILE,
                                                        root / "clip_vision" / kit.CLIP_FILE)
    assert (Path(args.detector), Path(args.pose_model)) == (root / "dwpose" / kit.DETECTOR_FILE,
                                                            root / "dwpose" / kit.ESTIMATOR_FILE)
    args = _resolved(root, "--vae", "mine.safetensors", "--dit", "my_dit.gguf")           # explicit options win
    assert (args.vae, args.dit) == ("mine.safetensors", "my_dit.gguf")

    (root / "diffusion_models" / "SteadyDancer" / kit.DIT_FP8).unlink()
    (root / "text_encoders" / kit.T5_FP8).unlink()
    args = _resolved(root)
    assert Path(args.dit).name == kit.DIT_FP16 and Path(args.t5).name == kit.T5_FP16
    (root / "diffusion_models" / kit.DIT_FP16).unlink()
    _layout(root, ["diffusion_models/other_model.gguf", "diffusion_models/SteadyDancer-14B-Q4_K_M.gguf"])
    assert Path(_resolved(root).dit).name == "SteadyDancer-14B-Q4_K_M.gguf"
    for gguf in (root / "diffusion_models").glob("*.gguf"):
        gguf.unlink()
    _layout(root, ["steadydancer/SteadyDancer-14B/config.json"])
    assert Path(_resolved(root).dit) == root / "steadydancer" / "SteadyDancer-14B"
    (root / "steadydancer" / "SteadyDancer-14B" / "config.json").unlink()
    with pytest.raises(cli.CLIError) as err:
        _resolved(root)
    for looked_for in (kit.DIT_FP8, kit.DIT_FP16, ".gguf", "SteadyDancer-14B/", str(root / "diffusion_models"),
                       str(root / "steadydancer"), "--dit PATH"):
        assert looked_for in str(err.value)
    (root / "vae" / kit.VAE_FILE).unlink()
    with pytest.raises(cli.CLIError) as err:
        _resolved(root, "--dit", "d")
    assert kit.VAE_FILE in str(err.value) and str(root / "vae") in str(err.value) and "--vae PATH" in str(err.value)
    with pytest.raises(cli.CLIError, match="folder not found"):
        _resolved(tmp_path / "absent")


def test_end_to_end_with_a_models_folder(tmp_path, caplog):
    from steadydancer_core import tiny_kit

    kit = tiny_kit.write_kit(tmp_path / "models", tmp_path / "inputs")
    out = tmp_path / "dance.mp4"
    args = ["--photo", str(kit.photo), "--video", str(kit.video), "--models", str(tmp_path / "models"),
            "--out", str(out), "--steps", "1", "--max-area", str(64 * 64), "--max-frames", "5", "--length", "0"]
    with caplog.at_level("INFO", logger="steadydancer"):
        assert cli.main(args) == 0
    assert f"dit = {tmp_path / 'models' / 'diffusion_models' / tiny_kit.DIT_FP8}" in caplog.text
    frames, _ = video_io.read_video(out)
    assert frames.shape[0] >= 1 and torch.isfinite(frames).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dance.mp4", "inputs", "models"]


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
    prepared, _driving = cli.poses_from_video(args, photo, lambda done: None)
    resized, (positive, negative) = prepared.photo, prepared.sources()
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


def test_composite_photo_and_background_names():
    from steadydancer_core import PHOTO, background_name, composite_photo, parse_background

    assert parse_background(PHOTO.default("background")) == (255, 255, 255) and parse_background(" Black ") == (0, 0, 0)
    assert parse_background("#ff8000") == (255, 128, 0) and background_name((255, 128, 0)) == "#FF8000"
    for wrong in ("grey", "#12345", "", None):
        with pytest.raises(ValueError, match="background must be white, black or #RRGGBB"):
            parse_background(wrong)
    photo = torch.rand(1, 4, 6, 3)
    alpha = torch.ones(4, 6)
    alpha[:, :2] = 0.0
    out = composite_photo(photo, alpha[None], "#FF0000")                      # [1, H, W] alpha too
    assert out.shape == photo.shape and torch.equal(out[0, :, 2:], photo[0, :, 2:])
    assert torch.equal(out[0, :, :2], torch.tensor([1.0, 0.0, 0.0]).expand(4, 2, 3))
    with pytest.raises(ValueError, match="same size"):
        composite_photo(photo, torch.ones(5, 6), "white")


def test_report_writes_the_quality_files_beside_the_video(tmp_path, caplog):
    import json

    from steadydancer_core import QualityReport, tiny_kit

    kit = tiny_kit.write_kit(tmp_path / "models", tmp_path / "inputs")
    out = tmp_path / "dance.mp4"
    args = ["--photo", str(kit.photo), "--video", str(kit.video), "--models", str(tmp_path / "models"),
            "--out", str(out), "--steps", "1", "--max-area", str(64 * 64), "--max-frames", "5", "--report"]
    with caplog.at_level("INFO", logger="steadydancer"):
        assert cli.main(args) == 0
    assert "start gap" in caplog.text                                       # said before generating
    report = QualityReport.from_json((tmp_path / "dance.quality.json").read_text())
    assert (tmp_path / "dance.quality.png").stat().st_size > 0 and report.num_frames == video_io.probe_video(out).frames
    assert report.verdicts["first_frame"] == "good"                         # first_frame exact: frame 0 is the photo
    assert f"quality: {report.summary_line()}" in caplog.text
    assert json.loads((tmp_path / "dance.quality.json").read_text())["label"] == "dance.mp4"


def test_output_problems_are_found_before_any_model_loads(tmp_path, caplog, no_models, monkeypatch):
    import shutil
    import tempfile as tempfile_module

    base = _pose_run(tmp_path)
    long_name = "x" * 251 + ".mp4"                                          # fits alone, not with the temporary name
    assert cli.main(base + ["--out", str(tmp_path / long_name)]) == 2 and "is too long" in caplog.text
    caplog.clear()
    real_mkstemp = tempfile_module.mkstemp

    def refuse(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == tmp_path / "ro":
            raise PermissionError(13, "Permission denied")
        return real_mkstemp(*args, dir=dir, **kwargs)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(tempfile_module, "mkstemp", refuse)
    assert cli.main(base + ["--out", str(tmp_path / "ro" / "o.mp4")]) == 2
    assert "does not accept new files; choose another output folder" in caplog.text
    monkeypatch.setattr(tempfile_module, "mkstemp", real_mkstemp)
    caplog.clear()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1 << 30, 1 << 30, 1 << 20))
    assert cli.main(base + ["--out", str(tmp_path / "o.mp4")]) == 2 and "has only 1 MB free" in caplog.text


def test_errors_during_the_run_are_one_line(tmp_path, caplog, monkeypatch):
    from steadydancer_core import NonFiniteLatentError

    base = _pose_run(tmp_path) + ["--out", str(tmp_path / "o.mp4")]
    monkeypatch.setattr(cli, "check_model_files", lambda files: None)
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: type("M", (), {"fp8_matmul_report": ""})())

    def unstable(*args, **kwargs):
        raise NonFiniteLatentError("the latent became NaN at step 2/4; try a lower text_cfg or another LoRA")

    monkeypatch.setattr(cli, "generate", unstable)
    assert cli.main(base) == 2 and "error: the latent became NaN at step 2/4" in caplog.text
    assert not list(tmp_path.glob(".o.*")) and not (tmp_path / "o.mp4").exists()


def test_sigterm_stops_like_ctrl_c_and_leaves_nothing_behind(tmp_path):
    import signal
    import subprocess
    import sys

    base = _pose_run(tmp_path) + ["--out", str(tmp_path / "o.mp4")]
    script = f"""
import sys, time, torch
from steadydancer_core import cli
cli.check_model_files = lambda files: None
cli.load_model = lambda *a, **k: type("M", (), {{"fp8_matmul_report": ""}})()
def generate(model, photo, positive, negative, settings, progress, on_frames):
    on_frames(0, torch.rand(5, 16, 16, 3))
    print("writing", flush=True)
    time.sleep(60)
cli.generate = generate
sys.exit(cli.main({base!r}))
"""
    from conftest import REPO_ROOT

    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert list(tmp_path.glob(".o.*"))                                   # the temporary video is there
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "terminated; no video written" in proc.stderr.read()
    assert not list(tmp_path.glob(".o.*")) and not (tmp_path / "o.mp4").exists()
