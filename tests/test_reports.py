"""What the artist reads: each node's report starts with one line in the widgets' words (what was or will be made,
size, frame rate, time or memory, anything adjusted and why), and the previews cover the whole clip evenly."""
from __future__ import annotations

import re
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests"))

import comfy_standin  # noqa: E402

import steadydancer_core as sd  # noqa: E402

GIB = 1 << 30


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with comfy_standin.host_with_kit(tmp_path_factory.mktemp("comfy")) as (host, nodes, _):
        yield host, nodes


def _module(name):
    return sys.modules[f"{comfy_standin.PACK_NAME}.nodes.{name}"]


# ------------------------------------------------------------------------------------------ preview picker
@pytest.mark.parametrize("count", [1, 2, 3, 5, 12, 23, 24, 25, 47, 48, 49, 81, 401, 1000])
@pytest.mark.parametrize("limit", [24, 48])
def test_preview_picker_spreads_over_short_and_long_clips(env, count, limit):
    picks = _module("pose_nodes").preview_indices(count, limit)
    assert picks == sorted(set(picks)) and len(picks) == min(count, limit)
    assert picks[0] == 0 and picks[-1] == count - 1, "the first and the last frame are shown"
    gaps = np.diff(picks)
    if len(gaps):
        assert gaps.max() - gaps.min() <= 1, f"evenly spread: gaps {sorted(set(gaps.tolist()))}"


class _Source:
    def __init__(self, count):
        self.pose_frames = list(range(count))
        self.canvas_hw = (64, 48)

    def __len__(self):
        return len(self.pose_frames)


@pytest.mark.parametrize("count", [5, 12, 100])
def test_both_previews_show_frames_from_the_whole_clip(env, monkeypatch, count):
    """AlignPose's and ExtractPose's previews draw the frames the picker chose: all of a short clip (AlignPose
    once showed frames 0..(count-1)**2/23 of it: 2 of 5), first to last of a long one."""
    pose_nodes = _module("pose_nodes")
    drawn = []

    def render(frame, size, output_hw=None):
        drawn.append(frame)
        h, w = output_hw or size
        return np.zeros((h, w, 3), np.uint8)

    monkeypatch.setattr(pose_nodes.pose_api, "render", render)
    list(pose_nodes._align_preview(_Source(count), np.zeros((32, 24, 3), np.uint8)))
    assert drawn == pose_nodes.preview_indices(count, pose_nodes.ALIGN_PREVIEW_FRAMES)
    assert drawn[0] == 0 and drawn[-1] == count - 1 and len(drawn) == min(count, pose_nodes.ALIGN_PREVIEW_FRAMES)
    drawn.clear()
    frames = list(range(count))
    sequence = type("Seq", (), {"image_hw": (64, 48), "__len__": lambda s: count,
                                "__getitem__": lambda s, i: frames[i]})()
    list(pose_nodes._render_preview(sequence))
    assert drawn == pose_nodes.preview_indices(count, pose_nodes.PREVIEW_FRAMES)


# ------------------------------------------------------------------------------------------- memory words
def test_sizes_are_written_in_the_unit_of_max_vram_gb_never_as_zero():
    assert [sd.format_size(n) for n in (0, 1, 85 << 20, int(1.44 * GIB), 19 * GIB + (GIB >> 2))] == [
        "0 MB", "1 MB", "85 MB", "1.4 GB", "19 GB"]


def test_memory_plan_summary_is_in_the_loaders_words():
    sizes = sd.ModelSizes(400 << 20, 40, 1 << 30)
    swapped = sd.plan_memory(24 * GIB, sizes, sd.JobShape(832, 480, 81, 2), sd.OffloadRequest(blocks_to_swap=20))
    assert re.fullmatch(r"block_swap: 20 of 40 blocks streamed from RAM; about [\d.]+ GB of VRAM at the peak",
                        swapped.summary())
    resident = sd.plan_memory(80 * GIB, sizes, sd.JobShape(832, 480, 81, 2))
    assert re.fullmatch(r"all_resident: all 40 blocks on the GPU; about [\d.]+ GB of VRAM at the peak",
                        resident.summary())
    tight = sd.plan_memory(2 * GIB, sizes, sd.JobShape(832, 480, 81, 2), sd.OffloadRequest(blocks_to_swap=40))
    assert tight.summary().endswith("usable: DOES NOT FIT")
    cpu = sd.plan_memory(8 * GIB, sd.ModelSizes(1 << 20, 4, 8 << 20), sd.JobShape(64, 64, 5, 1), device="cpu")
    assert re.fullmatch(r"computing on the CPU: about \d+ MB of RAM at the peak", cpu.summary())
    assert (swapped.width, swapped.height, swapped.frames, swapped.n_blocks) == (832, 480, 81, 40)
    assert "est. peak 0.0" not in cpu.explanation and " MB (weights " in cpu.explanation


# ------------------------------------------------------------------------------------------- first lines
def _result(frames=81, segments=1, first_frame="exact", plan=None, notices=()):
    return SimpleNamespace(num_frames=frames, width=832, height=480, segments=[object()] * segments,
                           first_frame=first_frame, memory_plan=plan, notices=list(notices))


@pytest.mark.parametrize("result, settings, available, seconds, first", [
    (_result(), sd.GenerationSettings(), 120, 190.0,
     "Made 81 frames at 832x480, 16 fps (5.1 s of video), in 1 segment, 40 steps, in 3 min 10 s; frame 0 = the "
     "photo, pixel for pixel"),
    (_result(5), sd.GenerationSettings(length=81), 5, 4.25,
     "Made 5 frames (length 81, but the driving poses have 5) at 832x480, 16 fps (0.3 s of video), in 1 segment, "
     "40 steps, in 4.2 s; frame 0 = the photo, pixel for pixel"),
    (_result(401, 6, "latent"), sd.GenerationSettings(length=0, steps=4), 403, 7300.0,
     "Made 401 frames (403 rounded down to 4n+1) at 832x480, 16 fps (25.1 s of video), in 6 overlapping segments, "
     "4 steps, in 2 h 01 min; frame 0 = the photo through the VAE (close, not identical)"),
    (_result(9, 1, "model"), sd.GenerationSettings(length=12), 10, 12.4,
     "Made 9 frames (length 12, but the driving poses have 10; rounded down to 4n+1) at 832x480, 16 fps (0.6 s of "
     "video), in 1 segment, 40 steps, in 12 s; frame 0 re-made by the model (official behaviour)"),
])
def test_sampler_report_first_line(env, result, settings, available, seconds, first):
    text = _module("reports").sampler_report(result, settings, 16.0, seconds, available)
    assert text.splitlines()[0] == first


@pytest.mark.parametrize("sigmas, steps", [((1.0, 0.6, 0.3), 3), ((1.0, 0.6, 0.3, 0.0), 3), ((0.9,), 1)])
def test_sampler_report_counts_the_steps_of_custom_sigmas(env, sigmas, steps):
    text = _module("reports").sampler_report(_result(), sd.GenerationSettings(sigmas=sigmas), 16.0, 1.0, 81)
    assert f" {steps} step{'s' * (steps > 1)}, " in text.splitlines()[0]


def test_sampler_report_says_the_adjustment_once_then_the_real_plan(env):
    reports = _module("reports")
    plan = sd.plan_memory(12 * GIB, sd.ModelSizes(400 << 20, 40, 1 << 30), sd.JobShape(832, 480, 81, 2))
    notices = sd.resolve_length(81, 5)[1] + ["3 segments of up to 81 frames (overlap 9); largest colour drift"]
    text = reports.sampler_report(_result(5, plan=plan, notices=notices), sd.GenerationSettings(), 16.0, 3.0, 5,
                                  notes=["photo composited on white"])
    assert text.splitlines()[1:] == ["photo composited on white", notices[1], f"memory: {plan.summary()}",
                                     f"memory plan for this job: {plan.explanation}"]


def test_every_pack_node_report_starts_with_an_artists_line(env):
    host, nodes = env
    import json

    prompt = json.loads((REPO_ROOT / "workflows" / "api" / "steadydancer_basic_dance.json").read_text())
    ids = {v["class_type"]: k for k, v in prompt.items()}
    prompt[ids["SteadyDancerSampler"]]["inputs"].update(steps=1, max_area=48 * 64)
    run = comfy_standin.run_prompt(prompt, nodes)
    first = {t: run["ui"][ids[t]]["text"][0].splitlines()[0] for t in
             ("LoadSteadyDancerModel", "ExtractPose", "AlignPose", "SteadyDancerSampler")}
    assert re.fullmatch(r"Loaded SteadyDancer fp8 \+ umT5 fp8 \+ VAE \+ CLIP vision on cpu, computing in bf16; a "
                        r"typical job \(81 frames at 1024x576\): computing on the CPU: about \d+ MB of RAM at the peak",
                        first["LoadSteadyDancerModel"])
    assert re.fullmatch(r"Poses of (\d+) driving frames at 16 fps \([\d.]+ s\); a person in \1 of \1 frames",
                        first["ExtractPose"])
    assert re.fullmatch(r"(\d+) pose frames aligned to the photo \(\d+x\d+\); preview: all \1", first["AlignPose"])
    assert re.fullmatch(r"Made \d+ frames \(length 81, but the driving poses have \d+\) at \d+x\d+, 16 fps \([\d.]+ s "
                        r"of video\), in 1 segment, 1 step, in [\d.]+ s; frame 0 = the photo, pixel for pixel",
                        first["SteadyDancerSampler"])


def test_one_log_line_per_job_phase_not_per_vae_call(env, caplog):
    host, nodes = env
    import json

    prompt = json.loads((REPO_ROOT / "workflows" / "api" / "steadydancer_long_video.json").read_text())
    sampler = next(k for k, v in prompt.items() if v["class_type"] == "SteadyDancerSampler")
    prompt[sampler]["inputs"].update(steps=1, max_area=48 * 64)
    with caplog.at_level("INFO"):
        comfy_standin.run_prompt(prompt, nodes)
    lines = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert not [line for line in lines if line.startswith("VAE ")], "the VAE's plans are DEBUG lines"
    phases = [line.split(":")[0] for line in lines if line.startswith(("Load SteadyDancer", "SteadyDancer "))]
    assert sorted(phases) == ["Load SteadyDancer Model", "SteadyDancer Align Pose", "SteadyDancer Extract Pose",
                              "SteadyDancer Sampler"], "one line per phase"


def test_extract_and_align_first_lines(env):
    reports = _module("reports")
    assert reports.extract_report(81, 16.0, "a person in 79 of 81 frames", "driving video 24 fps resampled",
                                  True).splitlines() == [
        "Poses of 81 driving frames at 16 fps (5.1 s); a person in 79 of 81 frames",
        "driving video 24 fps resampled", "driving audio: found (the audio output)"]
    assert reports.align_report(81, (976, 592), 24, 1).splitlines() == [
        "81 pose frames aligned to the photo (592x976); preview: 24 of 81, evenly spread",
        "IMAGE outputs: frame 0 only (image_outputs first_frame)"]
