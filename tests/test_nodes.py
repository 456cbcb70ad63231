"""The nodes under a stand-in ComfyUI host with the tiny model kit: every bundled API workflow runs end to end and
writes a video; progress, interrupt, model folders and error messages.

The API workflows run with their own values except the sampler's steps and max_area, which are lowered to keep the
test within a few seconds on CPU (the real ComfyUI check runs them unchanged).
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests"))

import comfy_standin  # noqa: E402

API_FILES = sorted((REPO_ROOT / "workflows" / "api").glob("*.json"))
FAST = {"steps": 2, "max_area": 48 * 64}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """(host, node classes) with the tiny kit written into the host's models and input folders."""
    with comfy_standin.host_with_kit(tmp_path_factory.mktemp("comfy")) as (host, nodes, _):
        host.cache = {}  # node outputs shared by the tests, as ComfyUI's cache shares them between prompts
        yield host, nodes


def _fast(prompt: dict) -> dict:
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        if node["class_type"] == "SteadyDancerSampler":
            node["inputs"].update(FAST)
    return prompt


def _read_frames(path: Path) -> torch.Tensor:
    from steadydancer_core.video_io import read_video

    return read_video(path)[0]


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.stem)
def test_api_workflow_runs_and_writes_a_video(path, env):
    host, classes = env
    before = set(host.output_dir.rglob("*.mp4"))
    host.progress.clear()
    run = comfy_standin.run_prompt(_fast(json.loads(path.read_text())), classes, host.cache)
    written = sorted(set(host.output_dir.rglob("*.mp4")) - before)
    assert len(written) == 1, written
    frames = _read_frames(written[0])
    sampler_id = next(k for k, v in json.loads(path.read_text()).items() if v["class_type"] == "SteadyDancerSampler")
    latent = run["outputs"][sampler_id][0]
    result = latent["steadydancer_result"]
    assert frames.shape[0] == result.num_frames >= 5
    assert tuple(frames.shape[1:3]) == (result.height, result.width)
    assert latent["samples"].shape[:2] == (1, 16)
    steps = [p for p in host.progress if p[0] == sampler_id]
    assert steps and steps[-1][1] == steps[-1][2], "the sampler's progress bar reaches its end"
    report = "; ".join(str(n) for n in result.notices)
    assert latent["steadydancer_report"] == report
    model = run["outputs"][next(k for k, v in json.loads(path.read_text()).items()
                                if v["class_type"] == "LoadSteadyDancerModel")][0]
    lines = run["ui"][sampler_id]["text"][0].splitlines()
    assert lines[0].startswith(f"Made {result.num_frames} frames")
    assert f" at {result.width}x{result.height}, " in lines[0]
    assert f"memory: {result.memory_plan.summary()}" in lines
    plan = next(line for line in lines if line.startswith("memory plan for this job: "))
    assert f"{result.width}x{result.height}x" in plan, "the plan is the one for this job's size"


def test_loader_text_shows_the_plan_and_one_line_per_lora(env):
    _, classes = env
    lora = "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors"
    args = dict(dit_name="Wan21_SteadyDancer_fp16.safetensors", vae_name="wan_2.1_vae.safetensors",
                t5_name="umt5_xxl_fp16.safetensors", clip_vision_name="clip_vision_h.safetensors", precision="fp32",
                attention="sdpa", offload="block_swap", blocks_to_swap=3, max_vram_gb=0.0)
    (stack,) = classes["SteadyDancerLoRA"]().add(lora, 0.5)
    out = classes["LoadSteadyDancerModel"]().load(**args, lora_name=lora, lora_strength=1.0, loras=stack)
    model = out["result"][0]
    settings = model.settings
    assert (settings.offload, settings.blocks_to_swap, settings.vram_cap_gb) == ("block_swap", 3, None)
    count = len(model.lora_reports[0].files[0].matched)
    assert count > 0 and not model.lora_reports[0].unmatched
    plan_line = "memory plan for a typical job (each run is planned for its real size): "
    lines = out["ui"]["text"][0].splitlines()
    assert lines[0].startswith("Loaded SteadyDancer fp32 + umT5 fp32 + VAE + CLIP vision on cpu, computing in fp32; ")
    assert lines[1:] == [plan_line + model.load_plan.explanation,
                         f"LoRA {lora}: {count}/{count} modules, strength 0.5",
                         f"LoRA {lora}: {count}/{count} modules, strength 1.0"]
    plain = classes["LoadSteadyDancerModel"]().load(**args, lora_name="None", lora_strength=1.0)
    assert plain["ui"]["text"][0].splitlines()[1:] == [plan_line + plain["result"][0].load_plan.explanation,
                                                       "no LoRA"]
    with pytest.raises(ValueError, match="^offload must be one of auto, all_resident, block_swap, got 'none'$"):
        classes["LoadSteadyDancerModel"]().load(**{**args, "offload": "none"}, lora_name="None", lora_strength=1.0)


def test_decode_with_tiling_on(env):
    host, classes = env
    prompt = _fast(json.loads((REPO_ROOT / "workflows" / "api" / "steadydancer_basic_dance.json").read_text()))
    decode = next(k for k, v in prompt.items() if v["class_type"] == "DecodeVideo")
    sampler = next(k for k, v in prompt.items() if v["class_type"] == "SteadyDancerSampler")
    prompt[decode]["inputs"].update(tiling="on", tile_size=64)
    run = comfy_standin.run_prompt(prompt, classes, host.cache)
    frames, video = run["outputs"][decode]
    result = run["outputs"][sampler][0]["steadydancer_result"]
    assert frames.shape == (result.num_frames, result.height, result.width, 3)
    assert 0.0 <= float(frames.min()) and float(frames.max()) <= 1.0
    assert video.get_components().images is frames


def test_long_video_in_segments(env):
    host, classes = env
    prompt = _fast(json.loads((REPO_ROOT / "workflows" / "api" / "steadydancer_basic_dance.json").read_text()))
    ids = {v["class_type"]: k for k, v in prompt.items()}
    run = comfy_standin.run_prompt(prompt, classes, host.cache)  # upstream outputs (cached from earlier tests)
    model = run["outputs"][ids["LoadSteadyDancerModel"]][0]
    photo = run["outputs"][ids["LoadImage"]][0]
    align_inputs = {k: v for k, v in prompt[ids["AlignPose"]]["inputs"].items() if not isinstance(v, list)}
    pose = run["outputs"][ids["ExtractPose"]][0]
    positive, negative = classes["AlignPose"]().align(photo, pose, **{**align_inputs,
                                                                      "image_outputs": "all_frames"})["result"][:2]
    positive, negative = torch.cat([positive, positive.flip(0)]), torch.cat([negative, negative.flip(0)])
    inputs = {k: v for k, v in prompt[ids["SteadyDancerSampler"]]["inputs"].items() if not isinstance(v, list)}
    inputs.update(length=9, segment_frames=5, segment_overlap=1)
    out = classes["SteadyDancerSampler"]().sample(model, photo, positive, negative, **inputs)
    latent = out["result"][0]
    assert len(latent["steadydancer_result"].segments) == 2 and out["ui"]["text"][0].startswith("Made 9 frames")
    frames, _ = classes["DecodeVideo"]().decode(model, latent, "auto", 256, 16.0)
    assert frames.shape[0] == 9


def test_aligned_pose_socket_equals_the_rendered_image_frames(env):
    """AlignPose's compact aligned_pose gives the sampler the very frames its IMAGE outputs hold (rendered one
    segment at a time): the same latents; its first_frame IMAGE outputs are frame 0 of the full ones."""
    host, classes = env
    prompt = _fast(json.loads((REPO_ROOT / "workflows" / "api" / "steadydancer_basic_dance.json").read_text()))
    ids = {v["class_type"]: k for k, v in prompt.items()}
    run = comfy_standin.run_prompt(prompt, classes, host.cache)
    model = run["outputs"][ids["LoadSteadyDancerModel"]][0]
    photo = run["outputs"][ids["LoadImage"]][0]
    pose = run["outputs"][ids["ExtractPose"]][0]
    align_inputs = {k: v for k, v in prompt[ids["AlignPose"]]["inputs"].items() if not isinstance(v, list)}
    node = classes["AlignPose"]()
    full = node.align(photo, pose, **{**align_inputs, "image_outputs": "all_frames"})["result"]
    first = node.align(photo, pose, **{**align_inputs, "image_outputs": "first_frame"})["result"]
    positive, negative, compact, preview = full
    assert len(compact) == positive.shape[0] == negative.shape[0] and compact.frame_hw == tuple(positive.shape[1:3])
    assert torch.equal(first[0], positive[:1]) and torch.equal(first[1], negative[:1])
    assert preview.ndim == 4 and max(preview.shape[1:3]) <= 384 and preview.shape[0] <= 24
    assert float((preview.sum(-1) > 0).float().mean()) > 0.9, "the poses are drawn over the photo, not on black"
    inputs = {k: v for k, v in prompt[ids["SteadyDancerSampler"]]["inputs"].items() if not isinstance(v, list)}
    inputs.update(length=0, segment_frames=5, segment_overlap=1)
    sampler = classes["SteadyDancerSampler"]()
    with_images = sampler.sample(model, photo, positive, negative, **inputs)["result"][0]["steadydancer_result"]
    with_compact = sampler.sample(model, photo, aligned_pose=first[2], **inputs)["result"][0]["steadydancer_result"]
    assert len(with_images.segments) == len(with_compact.segments)
    for a, b in zip(with_images.segments, with_compact.segments):
        assert torch.equal(a.latent, b.latent)
    with pytest.raises(ValueError, match="aligned_pose"):
        sampler.sample(model, photo, **inputs)


def test_extract_pose_from_images_equals_from_video(env):
    host, classes = env
    video = classes["LoadVideo"]().load("steadydancer_dance.mp4")[0]
    frames, _, fps = classes["GetVideoComponents"]().get(video)
    node = classes["ExtractPose"]()
    common = dict(detector="yolox_l.onnx", pose_model="dw-ll_ucoco_384.onnx", person="highest", no_person="hold",
                  max_frames=0, target_fps=0.0)
    a = node.extract(**common, images_fps=fps, video=video)["result"]
    b = node.extract(**common, images_fps=fps, images=frames)["result"]
    assert len(a[0].sequence) == len(b[0].sequence) == frames.shape[0]
    assert a[2] == b[2] == pytest.approx(fps)
    torch.testing.assert_close(a[1], b[1])
    limited = node.extract(**{**common, "max_frames": 3}, images_fps=fps, images=frames)
    assert len(limited["result"][0].sequence) == 3 and "max_frames" in limited["ui"]["text"][0]
    slower = node.extract(**{**common, "target_fps": fps * 2 / 3}, images_fps=fps, images=frames)
    expected = len([j for j in range(3 * frames.shape[0]) if int(j * 1.5 + 1e-9) < frames.shape[0]])
    assert len(slower["result"][0].sequence) == expected and slower["result"][2] == pytest.approx(fps * 2 / 3)
    assert "resampled" in slower["ui"]["text"][0]


def test_interrupt_stops_the_sampler(env, monkeypatch):
    host, classes = env
    prompt = _fast(json.loads((REPO_ROOT / "workflows" / "api" / "steadydancer_basic_dance.json").read_text()))
    sampler_id = next(k for k, v in prompt.items() if v["class_type"] == "SteadyDancerSampler")
    prompt[sampler_id]["inputs"]["steps"] = 4
    bar = comfy_standin.sys.modules["comfy.utils"].ProgressBar
    original = bar.update_absolute

    def cancel_after_first_step(self, value, total=None, preview=None):
        original(self, value, total, preview)
        if self.node_id == sampler_id and value >= 1:
            host.interrupt = True

    monkeypatch.setattr(bar, "update_absolute", cancel_after_first_step)
    host.progress.clear()
    try:
        with pytest.raises(comfy_standin.InterruptProcessingException):
            comfy_standin.run_prompt(prompt, classes, host.cache)
    finally:
        host.interrupt = False
    done = [p for p in host.progress if p[0] == sampler_id]
    assert done and max(p[1] for p in done) < done[-1][2], "sampling stopped before the end of the job"


def test_model_folders_are_registered(env):
    host, classes = env
    import folder_paths

    assert folder_paths.get_filename_list("dwpose") == ["dw-ll_ucoco_384.onnx", "yolox_l.onnx"]
    assert str(host.models_dir / "steadydancer") in folder_paths.get_folder_paths("steadydancer")
    names = classes["LoadSteadyDancerModel"].INPUT_TYPES()["required"]["dit_name"][0]
    assert "Wan21_SteadyDancer_fp16.safetensors" in names


def test_controlnet_aux_dwpose_folder_is_found(env):
    host, _ = env
    import folder_paths

    aux = host.custom_nodes_dir / "comfyui_controlnet_aux" / "ckpts" / "yzd-v" / "DWPose"
    aux.mkdir(parents=True)
    (aux / "dw-ll_ucoco_384_aux_copy.onnx").write_bytes(b"onnx")
    try:
        from steadydancer_pack_under_test.nodes import comfy_bridge

        comfy_bridge.register_model_folders()
        assert "dw-ll_ucoco_384_aux_copy.onnx" in folder_paths.get_filename_list("dwpose")
        assert str(aux) in folder_paths.get_folder_paths("dwpose")
    finally:
        (aux / "dw-ll_ucoco_384_aux_copy.onnx").unlink()


def _load_args(dit="Wan21_SteadyDancer_fp16.safetensors", t5="umt5_xxl_fp16.safetensors", **options):
    """LoadSteadyDancerModel's inputs by name (the kit's files; fp32, sdpa, auto, no LoRA unless given)."""
    return {"dit_name": dit, "vae_name": "wan_2.1_vae.safetensors", "t5_name": t5,
            "clip_vision_name": "clip_vision_h.safetensors", "precision": "fp32", "attention": "sdpa",
            "offload": "auto", "blocks_to_swap": 0, "max_vram_gb": 0.0, "lora_name": "None", "lora_strength": 1.0,
            **options}


def test_errors_name_the_problem_and_the_fix(env):
    _, classes = env
    loader = classes["LoadSteadyDancerModel"]()
    with pytest.raises(FileNotFoundError, match=r"models/diffusion_models.*models/steadydancer"):
        loader.load(**_load_args(dit="missing.safetensors", precision="bf16", blocks_to_swap=20))
    with pytest.raises(ValueError, match="SteadyDancerSampler"):
        classes["DecodeVideo"]().decode(object(), {"samples": torch.zeros(1, 16, 1, 2, 2)}, "auto", 256, 24.0)
    with pytest.raises(ValueError, match="connect the SteadyDancer model .* or a VAE"):
        classes["DecodeVideo"]().decode(None, {"samples": torch.zeros(1, 16, 1, 2, 2)}, "auto", 256, 24.0)
    with pytest.raises(ValueError, match="connect 'video'"):
        classes["ExtractPose"]().extract("yolox_l.onnx", "dw-ll_ucoco_384.onnx", "highest", "hold", 0, 16.0, 24.0)


def test_max_vram_gb_reaches_the_memory_planner(env):
    _, classes = env
    capped = classes["LoadSteadyDancerModel"]().load(**_load_args(max_vram_gb=6.5))["result"][0]
    assert capped.settings.vram_cap_gb == 6.5
    free = classes["LoadSteadyDancerModel"]().load(**_load_args(max_vram_gb=0.0))["result"][0]
    assert free.settings.vram_cap_gb is None  # 0 = the free VRAM, no cap


def test_fp8_matmul_widget_reaches_the_loader_and_its_text_names_the_path(env):
    _, classes = env
    args = _load_args(dit="Wan21_SteadyDancer_fp8_e4m3fn_scaled_KJ.safetensors")
    out = classes["LoadSteadyDancerModel"]().load(**args, fp8_matmul=True)
    model = out["result"][0]
    line = model.fp8_matmul_report
    if not torch.cuda.is_available():
        assert line.startswith("fp8 matmul: not used - the model runs on cpu") and "upcast per layer" in line
    text = out["ui"]["text"][0].splitlines()
    assert line and line in text and model.load_plan.explanation in text[1] and model.load_plan.summary() in text[0]
    assert classes["LoadSteadyDancerModel"]().load(**args)["result"][0].fp8_matmul_report == ""


def test_lora_node_chains(env):
    _, classes = env
    lora = "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors"
    (stack,) = classes["SteadyDancerLoRA"]().add(lora, 0.5)
    (stack,) = classes["SteadyDancerLoRA"]().add(lora, 1.0, loras=stack)
    assert [s for _, s in stack.entries] == [0.5, 1.0] and all(p.endswith(lora) for p, _ in stack.entries)


def test_sampler_sends_previews_when_the_host_has_them_on(env, monkeypatch):
    host, classes = env
    prompt = _fast(json.loads((REPO_ROOT / "workflows" / "api" / "steadydancer_basic_dance.json").read_text()))
    sampler_id = next(k for k, v in prompt.items() if v["class_type"] == "SteadyDancerSampler")
    args = sys.modules["comfy.cli_args"].args
    for method, expected in (("none", False), ("latent2rgb", True)):
        monkeypatch.setattr(args, "preview_method", comfy_standin.LatentPreviewMethod(method))
        prompt[sampler_id]["inputs"]["seed"] += 1           # not cached: the sampler runs again
        host.progress.clear()
        comfy_standin.run_prompt(prompt, classes, host.cache)
        sent = [p[3] for p in host.progress if p[0] == sampler_id and p[1] > 0]
        assert sent and any(sent) is expected, method        # the steps carry previews, the encodes none


def test_transparent_photo_is_composited_on_the_background(env):
    """Load Image's MASK (1 = transparent) wired to AlignPose and the sampler: the photo is composited on the
    background widget's colour and both nodes say so; an opaque photo's 64x64 zero mask changes nothing."""
    import numpy as np
    from PIL import Image

    host, classes = env
    prompt = _fast(json.loads((REPO_ROOT / "workflows" / "api" / "steadydancer_basic_dance.json").read_text()))
    ids = {v["class_type"]: k for k, v in prompt.items()}
    assert prompt[ids["SteadyDancerSampler"]]["inputs"]["photo_mask"] == [ids["LoadImage"], 1]
    assert prompt[ids["AlignPose"]]["inputs"]["photo_mask"] == [ids["LoadImage"], 1]
    opaque = Image.open(host.input_dir / "steadydancer_photo.png").convert("RGB")
    rgba = np.dstack([np.asarray(opaque), np.full(opaque.size[::-1], 255, np.uint8)])
    rgba[:, : rgba.shape[1] // 4, 3] = 0                       # the left quarter transparent
    Image.fromarray(rgba, "RGBA").save(host.input_dir / "cutout.png")
    prompt[ids["LoadImage"]]["inputs"]["image"] = "cutout.png"
    for node in ("SteadyDancerSampler", "AlignPose"):
        prompt[ids[node]]["inputs"]["background"] = "black"
    run = comfy_standin.run_prompt(prompt, classes, host.cache)
    note = "photo composited on black using the mask (25% transparent)"
    sampler = run["outputs"][ids["SteadyDancerSampler"]][0]
    assert note in sampler["steadydancer_report"] and note in run["ui"][ids["SteadyDancerSampler"]]["text"][0]
    assert note in run["ui"][ids["AlignPose"]]["text"][0]
    result = sampler["steadydancer_result"]
    assert float(result.photo[:, : result.width // 4 - 2].max()) < 0.02      # black where it was transparent

    photo, mask = classes["LoadImage"]().load_image("cutout.png")
    node = classes["SteadyDancerSampler"]()
    _, opaque_mask = classes["LoadImage"]().load_image("steadydancer_photo.png")
    assert opaque_mask.shape == (1, 64, 64)
    import importlib
    photo_input = importlib.import_module(f"{comfy_standin.PACK_NAME}.nodes.photo_input")
    same, none = photo_input.composite_with_mask(photo, opaque_mask, "white", "SteadyDancerSampler")
    assert same is photo and none is None
    white, text = photo_input.composite_with_mask(photo, mask[0], "#FFFFFF", "SteadyDancerSampler")  # [H, W]
    assert text.startswith("photo composited on white") and float(white[0, :, :2].min()) == 1.0
    assert torch.equal(white[0, :, -2:], photo[0, :, -2:])                  # opaque parts unchanged
    inputs = {k: v for k, v in prompt[ids["SteadyDancerSampler"]]["inputs"].items() if not isinstance(v, list)}
    aligned = run["outputs"][ids["AlignPose"]][2]
    with pytest.raises(ValueError, match=r"photo_mask is 8x6 but the photo is .*same Load Image node"):
        node.sample(None, photo, aligned_pose=aligned, photo_mask=torch.ones(1, 6, 8), **inputs)
    with pytest.raises(ValueError, match="background must be white, black or #RRGGBB"):
        node.sample(None, photo, aligned_pose=aligned, photo_mask=mask, **{**inputs, "background": "grey"})
    with pytest.raises(ValueError, match=r"AlignPose: photo_mask values must be in 0\.\.1"):
        classes["AlignPose"]().align(photo, run["outputs"][ids["ExtractPose"]][0], 0, "2x", "official",
                                     photo_mask=mask * 2)




def test_decode_video_reads_the_segments_the_sampler_decoded(env, monkeypatch):
    """A long video: every segment is VAE-decoded once over sampler + DecodeVideo; the kept segments live in the
    host's temp folder and a new run of the sampler removes the previous run's."""

    host, classes = env
    (model,) = classes["LoadSteadyDancerModel"]().load(**_load_args(offload="all_resident"))["result"]
    widgets = sys.modules[classes["SteadyDancerSampler"].__module__].SAMPLER.defaults()
    widgets.update(steps=1, max_area=48 * 64, segment_frames=5, segment_overlap=1, length=0, text_cfg=1.0)
    g = torch.Generator().manual_seed(0)
    photo, poses = torch.rand(1, 64, 48, 3, generator=g), torch.rand(13, 64, 48, 3, generator=g)
    decodes = []
    original = type(model.vae).decode
    monkeypatch.setattr(type(model.vae), "decode", lambda self, *a, **k: decodes.append(1) or original(self, *a, **k))

    def sample(seed):
        out = classes["SteadyDancerSampler"]().sample(model, photo, positive_pose=poses, negative_pose=poses,
                                                      unique_id="7", **dict(widgets, seed=seed))
        return out["result"][0]

    latent = sample(1)
    result = latent["steadydancer_result"]
    assert len(result.segments) == 3 and len(decodes) == 2
    frames, _ = classes["DecodeVideo"]().decode(model, latent, "off", 256, 16.0)
    assert frames.shape[0] == 13 and len(decodes) == 3
    (kept,) = [p for p in host.temp_dir.iterdir() if p.name.startswith("steadydancer-decoded-")]
    assert kept == result.decoded.path and len(list(kept.iterdir())) == 2
    again = sample(2)["steadydancer_result"]
    assert not kept.exists() and again.decoded.path.is_dir()


def test_align_pose_checks_its_photo_and_says_the_start_gap(env):
    host, classes = env
    prompt = json.loads((REPO_ROOT / "workflows" / "api" / "steadydancer_basic_dance.json").read_text())
    ids = {v["class_type"]: k for k, v in prompt.items()}
    run = comfy_standin.run_prompt(_fast(prompt), classes, host.cache)
    photo, pose = run["outputs"][ids["LoadImage"]][0], run["outputs"][ids["ExtractPose"]][0]
    node = classes["AlignPose"]()
    text = node.align(photo, pose)["ui"]["text"][0]
    assert "start gap" in text                                        # said before any sampling
    for bad, message in ((photo * 255, "divide 0..255 values by 255"), (photo * float("nan"), "in \\[0, 1\\]"),
                         (photo[:0], "got shape"), (torch.cat([photo, photo]), "a batch of 2 images")):
        with pytest.raises(ValueError, match=message):
            node.align(bad, pose)
